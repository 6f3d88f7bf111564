"""Train the video DiT: one loop for t2i, t2v (staged), lora, motion_lora and inpaint.

    python scripts/train.py --config config/train_t2v.yaml data.meta=datasets/demo/metadata.json max_steps=500
    accelerate launch --multi_gpu scripts/train.py --config config/train_t2v.yaml

Every YAML key can be overridden as key=value (dotted for sections: data.batch_size=4, lora.rank=16).
"""

from __future__ import annotations

import argparse
import logging
import sys

from easyanimate.training.config import ConfigError, load_config
from easyanimate.training.run_config import TrainConfig
from easyanimate.training.trainer import train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="run YAML (config/train_*.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    result = train(cfg)
    print(f"done: {result['outputs']}; skipped files: {result['skipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
