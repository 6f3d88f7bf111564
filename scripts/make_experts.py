"""Join two trained pipelines into one with two denoising experts split by noise level (Wan 2.2's layout).

    python scripts/make_experts.py --high outputs/demo/t2v_motion/pipeline --low outputs/demo/t2v/pipeline \
        --boundary 0.95 --output outputs/demo/experts

`--high` (its sampler, VAE and text encoder, and its transformer for timesteps >= boundary x the train
timesteps) and `--low` (its transformer, saved as `transformer_2`, for the rest) must share the VAE and text
encoder. The result loads and samples like any pipeline folder (`predict_t2v.py`, the web UI, the evaluation).
"""

from __future__ import annotations

import argparse
import sys

from easyanimate.pipeline.experts import make_experts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--high", required=True, help="pipeline folder whose transformer takes the high-noise steps"
    )
    p.add_argument("--low", required=True, help="pipeline folder whose transformer takes the low-noise steps")
    p.add_argument(
        "--boundary", type=float, default=0.95, help="noise level (timestep / train timesteps) of the switch"
    )
    p.add_argument("--output", required=True)
    a = p.parse_args(argv)
    try:
        make_experts(a.high, a.low, a.boundary, a.output)
    except (OSError, ValueError) as e:
        print(f"make_experts: {e}", file=sys.stderr)
        return 2
    print(f"{a.output}: transformer for noise >= {a.boundary}, transformer_2 below")
    return 0


if __name__ == "__main__":
    sys.exit(main())
