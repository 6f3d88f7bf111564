"""Temporal consistency: how alike consecutive frames are.

Without an encoder: mean SSIM of consecutive frames (pixel level; 1.0 for a frozen video). With a local image
encoder (`fvd.ImageFeatureEncoder`-style, per-frame features): mean cosine similarity of consecutive frames'
features, as VBench's subject/background consistency does with CLIP / DINO features.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .metrics import ssim


def temporal_consistency(
    frames: np.ndarray, frame_features: Callable[[np.ndarray], np.ndarray] | None = None
) -> float:
    """`frames`: `(F, H, W, 3)` uint8 with F >= 2. `frame_features`: `(F, H, W, 3)` -> `(F, D)`."""
    if frames.ndim != 4 or len(frames) < 2:
        raise ValueError(f"need (F >= 2, H, W, 3) frames, got {frames.shape}")
    if frame_features is None:
        x = torch.from_numpy(np.asarray(frames, dtype=np.float32) / 255.0).permute(0, 3, 1, 2)
        return float(np.mean([ssim(x[i], x[i + 1]) for i in range(len(x) - 1)]))
    f = np.asarray(frame_features(frames), dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.sum(f[:-1] * f[1:], axis=1)))
