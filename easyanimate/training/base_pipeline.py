"""The folder a DiT training run starts from: vae/ + text_encoder/ + tokenizer/ (scripts/make_base_pipeline.py).

The VAE can be rescaled to unit-variance latents measured on the data; the text encoder is a real folder, or a
tiny T5 whose word-level vocabulary is learnt from the captions (the demo model), kept at its random init.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import numpy as np
import torch

from ..data.folder import scan_media
from ..data.formats import load_records
from ..data.video_io import read_frames, read_image
from ..models.slice_vae import SliceVAE
from ..models.text_encoder import build_caption_tokenizer, build_tiny_t5_encoder, load_text_encoder


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


def caption_texts(metadata_files: Sequence[str]) -> list[str]:
    """Every caption of some "normal"-format metadata files (paths relative to each file's folder)."""
    return [r.text for meta in metadata_files for r in load_records("normal", meta, os.path.dirname(meta))]


def make_base_pipeline(
    vae_dir: str,
    output: str,
    text_encoder: str | None = None,
    captions: Sequence[str] | None = None,
    vocab_size: int = 256,
    d_model: int = 64,
    layers: int = 2,
    seed: int = 0,
    scale_from: str | None = None,
) -> dict[str, float | int]:
    """Write `output` (replaced whole: nothing else lives there); returns what it measured and built."""
    if (text_encoder is None) == (captions is None):
        raise ValueError("give either a text encoder folder or captions for a tiny one")
    if captions is not None and not captions:
        raise ValueError("no captions to build a tokenizer from")
    if os.path.exists(output):
        shutil.rmtree(output)
    info: dict[str, float | int] = {}
    vae = SliceVAE.from_pretrained(vae_dir).eval()
    if scale_from:
        info["latent_std"] = latent_std(vae, scale_from)
        vae.register_to_config(scaling_factor=1.0 / info["latent_std"])
    vae.save_pretrained(os.path.join(output, "vae"))
    if text_encoder:
        text = load_text_encoder(text_encoder)
        model, tokenizer = text.model, text.tokenizer
    else:
        tokenizer = build_caption_tokenizer(captions, vocab_size=vocab_size)
        # Random init, kept frozen: its features still separate the caption words; the DiT learns to read them.
        model = build_tiny_t5_encoder(tokenizer, d_model=d_model, num_layers=layers, seed=seed)
    model.save_pretrained(os.path.join(output, "text_encoder"))
    tokenizer.save_pretrained(os.path.join(output, "tokenizer"))
    info["text_encoder_params"] = sum(p.numel() for p in model.parameters())
    return info
