"""Train the video DiT: one loop for t2i, t2v (staged), lora, motion_lora and inpaint.

    python scripts/train.py --config config/train_t2v.yaml optimization.max_steps=500
    accelerate launch --multi_gpu scripts/train.py --config config/train_t2v.yaml

Every YAML key can be overridden as key=value, dotted by section (data.batch_size=4, optimization.max_steps=500,
validation.steps=0, lora.rank=16); config/README.md lists the sections.
"""

from __future__ import annotations

import sys

from easyanimate.config import config_from_cli
from easyanimate.training.config import TrainConfig
from easyanimate.training.trainer import train


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_cli(TrainConfig, __doc__, argv)
    if cfg is None:
        return 2
    result = train(cfg)
    print(f"done: {result['outputs']}; skipped files: {result['skipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
