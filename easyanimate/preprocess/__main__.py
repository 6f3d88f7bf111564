"""python -m easyanimate.preprocess --input raw_videos/ --output datasets/mydata --config config/preprocess.yaml

Scene split, quality / OCR / motion filters and captioning on Ray Data (a local Ray, or a cluster with
--ray-address host:port). Inputs and outputs are local paths or URIs (file:///..., s3://bucket/...): on a
cluster every node must reach them. Re-running resumes: finished videos, windows and clips are not recomputed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..config import ConfigError, load_config
from .config import PreprocessConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m easyanimate.preprocess",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", required=True, help="folder of raw videos (path or URI)")
    p.add_argument(
        "--output",
        required=True,
        help="dataset folder, path or URI (clips/, metadata.json, summary.json, work/: rows and checkpoints)",
    )
    p.add_argument("--config", default=None, help="config/preprocess.yaml")
    p.add_argument(
        "--ray-address",
        default=None,
        help="host:port of a cluster's head (`ray start --head`); default: a local Ray on this machine",
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. motion.min_motion=0.5")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides) + (
        [f"engine.ray_address={args.ray_address}"] if args.ray_address else []
    )
    try:
        cfg = load_config(PreprocessConfig, args.config, overrides)
    except (ConfigError, FileNotFoundError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    from .engine import TooFewCPUs, run

    try:
        summary = run(args.input, args.output, cfg)
    except (FileNotFoundError, ConnectionError, TooFewCPUs) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary.pop("stats", None)  # Ray Data's per-operator report: long; the benchmark reads it
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
