"""Spatial tiling seam error of the Slice VAE, measured on a trained (tiny) VAE.

A random VAE says nothing about seams (its GroupNorm statistics differ wildly per tile), so this first trains
the tiny VAE on synthetic shapes (or loads `--vae`), then decodes larger frames tiled and untiled:
error of tiled vs untiled, split into the bands around tile seams and the rest, and PSNR of both against
the original video.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, write_results  # noqa: E402

from easyanimate.config import load_config  # noqa: E402
from easyanimate.data.folder import MediaFolder  # noqa: E402
from easyanimate.data.synthetic import generate  # noqa: E402
from easyanimate.eval.metrics import psnr  # noqa: E402
from easyanimate.models.slice_vae import SliceVAE, _tile_starts  # noqa: E402
from easyanimate.training.vae.config import VAETrainConfig  # noqa: E402
from easyanimate.training.vae.trainer import train_vae  # noqa: E402


def seam_mask(size: int, tile: int, overlap: int, band: int) -> torch.Tensor:
    """True within `band` pixels of any tile overlap region (both axes)."""
    starts = _tile_starts(size, tile, tile - overlap)
    near = torch.zeros(size, dtype=torch.bool)
    for s in starts[1:]:
        near[max(0, s - band) : min(size, s + overlap + band)] = True
    return near[:, None] | near[None, :]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--vae", default=None, help="a trained VAE folder (skips training)")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--size", type=int, default=128, help="frame size to decode")
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--overlaps", type=int, nargs="+", default=[16, 32])
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench_tiling_")
    data = os.path.join(work, "data")
    generate(data, num_videos=40, num_images=20, size=64, frames=9, seed=0)
    vae_dir = args.vae
    if vae_dir is None:
        cfg = load_config(
            VAETrainConfig,
            None,
            [
                f"output_dir={work}/vae",
                f"data.root={data}",
                "data.num_frames=9",
                "data.size=64",
                "data.batch_size=2",
                f"max_steps={args.train_steps}",
                "learning_rate=1e-3",
                f"checkpointing_steps={args.train_steps}",
                f"validation_steps={args.train_steps}",
            ],
        )
        vae_dir = train_vae(cfg)["final_dir"]
    vae = SliceVAE.from_pretrained(vae_dir).eval()

    test = os.path.join(work, "test")
    generate(test, num_videos=4, num_images=0, size=args.size, frames=9, seed=123)
    clips = torch.cat(
        [MediaFolder(test, 9, args.size).validation_clip()]
        + [MediaFolder(test, 9, args.size, seed=s).batch(s)["pixels"] for s in range(3)]
    )
    rows = []
    with torch.no_grad():
        vae.use_tiling = False
        z = vae.encode(clips).latent_dist.mode()
        full = vae.decode(z).sample.clamp(-1, 1)
        base_psnr = psnr((full + 1) / 2, (clips + 1) / 2)
        for overlap in args.overlaps:
            vae.enable_tiling(tile_sample_size=args.tile, tile_sample_overlap=overlap)
            tiled = vae.decode(z).sample.clamp(-1, 1)
            vae.use_tiling = False
            diff = (tiled - full).abs()
            near = seam_mask(args.size, args.tile, overlap, band=8)
            rows.append(
                {
                    "tile": args.tile,
                    "overlap": overlap,
                    "max_abs_diff": diff.max().item(),
                    "mean_diff_near_seams": diff[..., near].mean().item(),
                    "mean_diff_elsewhere": diff[..., ~near].mean().item() if (~near).any() else 0.0,
                    "psnr_untiled_db": base_psnr,
                    "psnr_tiled_db": psnr((tiled + 1) / 2, (clips + 1) / 2),
                    "psnr_tiled_vs_untiled_db": psnr((tiled + 1) / 2, (full + 1) / 2),
                }
            )
    print(
        f"\ntiny Slice VAE ({vae_dir}), decode {clips.shape[0]} clips of 9 x {args.size}x{args.size}, values in [-1, 1]"
    )
    cols = ["tile", "overlap", "max_abs_diff", "mean_diff_near_seams", "mean_diff_elsewhere"]
    print_table(rows, cols + ["psnr_untiled_db", "psnr_tiled_db", "psnr_tiled_vs_untiled_db"])
    path = write_results(
        "bench_vae_tiling", {"train_steps": args.train_steps, "size": args.size, "rows": rows}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
