"""Precompute VAE latents and text features for a training run, so epochs skip encoding.

    python scripts/precompute.py --config config/train_t2v.yaml latent_cache=outputs/cache data.meta=...
    python scripts/train.py --config config/train_t2v.yaml latent_cache=outputs/cache data.random_crop=false ...

Use the same data settings for both; training refuses a cache made with other ones.
"""

from __future__ import annotations

import os
import sys

from easyanimate.models.slice_vae import SliceVAE
from easyanimate.models.text_encoder import load_text_encoder
from easyanimate.training.cache import precompute
from easyanimate.training.config import config_from_cli
from easyanimate.training.run_config import TrainConfig
from easyanimate.training.strategies import strategy_for
from easyanimate.training.trainer import build_data


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_cli(TrainConfig, __doc__, argv)
    if cfg is None:
        return 2
    if not cfg.latent_cache:
        print("config error: set latent_cache=<dir>", file=sys.stderr)
        return 2
    kind = strategy_for(cfg.mode, cfg.t2v_stage, cfg.lora.include_motion_modules).data
    records, sampler = build_data(cfg, kind)
    vae = SliceVAE.from_pretrained(os.path.join(cfg.pipeline, "vae")).eval()
    text = load_text_encoder(cfg.pipeline, max_length=cfg.max_text_length)
    n = precompute(cfg, kind, records, sampler, vae, text, cfg.latent_cache)
    print(f"cached {n} of {len(records)} records in {cfg.latent_cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
