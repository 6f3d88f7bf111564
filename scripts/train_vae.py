"""Train the Slice VAE (stage 1: encoder + decoder; stage 2: decoder only).

    python scripts/train_vae.py --config config/vae/tiny_stage1.yaml data.root=datasets/demo max_steps=200
    accelerate launch scripts/train_vae.py --config config/vae/slice4ch_stage1.yaml

Every YAML key can be overridden as key=value (dotted for sections: loss.kl_weight=1e-6).
"""

from __future__ import annotations

import argparse
import logging
import sys

from easyanimate.training.config import ConfigError, load_config
from easyanimate.training.vae.config import VAETrainConfig
from easyanimate.training.vae.trainer import train_vae


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="run YAML (config/vae/*.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(VAETrainConfig, args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    result = train_vae(cfg)
    print(f"saved {result['final_dir']}; skipped files: {len(result['skipped'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
