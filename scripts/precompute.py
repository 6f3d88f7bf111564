"""Precompute VAE latents and text features for a training run, so epochs skip encoding.

    python scripts/precompute.py --config config/train_t2v.yaml data.latent_cache=outputs/cache data.meta=...
    python scripts/train.py --config config/train_t2v.yaml data.latent_cache=outputs/cache data.random_crop=false

Use the same data settings for both; training refuses a cache made with other ones.
"""

from __future__ import annotations

import sys

from easyanimate.config import config_from_cli
from easyanimate.training.cache import precompute_run
from easyanimate.training.config import TrainConfig


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_cli(TrainConfig, __doc__, argv)
    if cfg is None:
        return 2
    if not cfg.data.latent_cache:
        print("config error: set data.latent_cache=<dir>", file=sys.stderr)
        return 2
    written, total = precompute_run(cfg)
    print(f"cached {written} of {total} records in {cfg.data.latent_cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
