"""Assemble the folder a DiT training run starts from: vae/ + text_encoder/ + tokenizer/.

    # a trained Slice VAE + a tiny T5 built offline, its vocabulary learnt from the captions (the demo model)
    python scripts/make_base_pipeline.py --vae outputs/demo/vae/stage2/vae \
        --captions datasets/demo/metadata.json --output outputs/demo/base

    # a trained Slice VAE + a real text encoder folder (e.g. PixArt-alpha's text_encoder/ and tokenizer/)
    python scripts/make_base_pipeline.py --vae ... --text-encoder models/Diffusion_Transformer/PixArt-XL-2-512x512 \
        --output ...

`scripts/train.py model.pipeline=<output> model.transformer=<preset>` then trains a transformer on top of it.
"""

from __future__ import annotations

import argparse
import sys

from easyanimate.training.base_pipeline import caption_texts, make_base_pipeline


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", required=True, help="a SliceVAE folder (scripts/train_vae.py writes <out>/vae)")
    p.add_argument("--output", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text-encoder", help="folder with text_encoder/ + tokenizer/ (or both in one)")
    src.add_argument("--captions", nargs="+", help="metadata files whose captions train a tiny tokenizer")
    p.add_argument("--vocab-size", type=int, default=256)
    p.add_argument("--d-model", type=int, default=64, help="tiny T5 width")
    p.add_argument("--layers", type=int, default=2, help="tiny T5 depth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--scale-from",
        help="data folder: set the VAE's scaling_factor to 1/std of its latents there (default: keep it)",
    )
    a = p.parse_args(argv)
    captions = caption_texts(a.captions) if a.captions else None
    if a.captions and not captions:
        print(f"no captions in {a.captions}", file=sys.stderr)
        return 2
    info = make_base_pipeline(
        a.vae,
        a.output,
        text_encoder=a.text_encoder,
        captions=captions,
        vocab_size=a.vocab_size,
        d_model=a.d_model,
        layers=a.layers,
        seed=a.seed,
        scale_from=a.scale_from,
    )
    if "latent_std" in info:
        print(f"latent std {info['latent_std']:.4f}: scaling_factor {1.0 / info['latent_std']:.4f}")
    print(f"wrote {a.output}: vae/, text_encoder/ ({info['text_encoder_params']} params), tokenizer/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
