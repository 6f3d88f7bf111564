"""Tensor <-> frame conversions for saving generated and reconstructed videos."""

from __future__ import annotations

import numpy as np
import torch

from ..data.video_io import write_video


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """`(3, F, H, W)` in [-1, 1] -> `(F, H, W, 3)` uint8."""
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def save_video_tensor(path: str, video: torch.Tensor, fps: float = 8) -> str:
    return write_video(path, to_uint8_frames(video), fps=fps)
