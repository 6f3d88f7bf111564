"""Frame transforms shared by datasets, the VAE trainer's folder and the pipeline's conditioning inputs."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_crop(
    frames: np.ndarray, size: int | tuple[int, int], rng: np.random.Generator | None
) -> torch.Tensor:
    """`(F, H, W, 3)` uint8 -> `(3, F, h, w)` in [-1, 1] for `size` = h = w or (h, w): scale to cover, then
    crop (random with `rng`, centred without)."""
    th, tw = (size, size) if isinstance(size, int) else size
    x = (
        torch.tensor(np.asarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
    )  # copies: inputs may be read-only
    h, w = x.shape[-2:]
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top = int(rng.integers(0, nh - th + 1)) if rng is not None else (nh - th) // 2
    left = int(rng.integers(0, nw - tw + 1)) if rng is not None else (nw - tw) // 2
    x = x[:, :, top : top + th, left : left + tw].clamp(-1, 1)
    return x.permute(1, 0, 2, 3).contiguous()
