"""Assemble the folder a DiT training run starts from: vae/ + text_encoder/ + tokenizer/.

    # a trained Slice VAE + a tiny T5 built offline, its vocabulary learnt from the captions (the demo model)
    python scripts/make_base_pipeline.py --vae outputs/demo/vae/stage2/vae \
        --captions datasets/demo/metadata.json --output outputs/demo/base

    # a trained Slice VAE + a real text encoder folder (e.g. PixArt-alpha's text_encoder/ and tokenizer/)
    python scripts/make_base_pipeline.py --vae ... --text-encoder models/Diffusion_Transformer/PixArt-XL-2-512x512 \
        --output ...

`scripts/train.py pipeline=<output> transformer=<preset>` then trains a transformer on top of it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np
import torch

from easyanimate.data.folder import scan_media
from easyanimate.data.formats import load_records
from easyanimate.data.video_io import read_frames, read_image
from easyanimate.models.slice_vae import SliceVAE
from easyanimate.models.text_encoder import build_caption_tokenizer, build_tiny_t5_encoder, load_text_encoder


@torch.no_grad()
def latent_std(vae: SliceVAE, root: str, count: int = 32, frames: int = 9) -> float:
    """Std of the VAE's latents over some of the data: 1/std is the scaling factor that gives the diffusion
    model unit-variance latents (Stable Diffusion's 0.18215 was measured the same way)."""
    videos, images = scan_media(root)
    paths = (videos[: count // 2] + images[: count // 2]) or (videos + images)[:count]
    if not paths:
        raise FileNotFoundError(f"no images or videos under {root} to measure the latent scale on")
    latents = []
    for path in paths:
        clip = read_frames(path)[:frames] if path in videos else read_image(path)[None]
        x = torch.from_numpy(np.array(clip)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        latents.append(vae.encode(x).latent_dist.mode().flatten())
    return float(torch.cat(latents).std())


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

    if os.path.exists(a.output):
        shutil.rmtree(a.output)  # a re-run rebuilds the whole folder; nothing else lives there
    vae = SliceVAE.from_pretrained(a.vae).eval()
    if a.scale_from:
        std = latent_std(vae, a.scale_from)
        vae.register_to_config(scaling_factor=1.0 / std)
        print(f"latent std {std:.4f}: scaling_factor {1.0 / std:.4f}")
    vae.save_pretrained(os.path.join(a.output, "vae"))
    if a.text_encoder:
        text = load_text_encoder(a.text_encoder)
        model, tokenizer = text.model, text.tokenizer
    else:
        captions = [
            r.text for meta in a.captions for r in load_records("normal", meta, os.path.dirname(meta))
        ]
        if not captions:
            print(f"no captions in {a.captions}", file=sys.stderr)
            return 2
        tokenizer = build_caption_tokenizer(captions, vocab_size=a.vocab_size)
        # Random init, kept frozen: its features still separate the caption words; the DiT learns to read them.
        model = build_tiny_t5_encoder(tokenizer, d_model=a.d_model, num_layers=a.layers, seed=a.seed)
    model.save_pretrained(os.path.join(a.output, "text_encoder"))
    tokenizer.save_pretrained(os.path.join(a.output, "tokenizer"))
    print(
        f"wrote {a.output}: vae/, text_encoder/ ({sum(p.numel() for p in model.parameters())} params), tokenizer/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
