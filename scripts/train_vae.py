"""Train the Slice VAE (stage 1: encoder + decoder; stage 2: decoder only).

    python scripts/train_vae.py --config config/vae/tiny_stage1.yaml data.root=datasets/demo max_steps=200
    accelerate launch scripts/train_vae.py --config config/vae/slice4ch_stage1.yaml

Every YAML key can be overridden as key=value (dotted for sections: loss.kl_weight=1e-6).
"""

from __future__ import annotations

import sys

from easyanimate.config import config_from_cli
from easyanimate.training.vae.config import VAETrainConfig
from easyanimate.training.vae.trainer import train_vae


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_cli(VAETrainConfig, __doc__, argv)
    if cfg is None:
        return 2
    result = train_vae(cfg)
    print(f"saved {result['final_dir']}; skipped files: {len(result['skipped'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
