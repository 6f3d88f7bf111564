"""Frechet distance between two sets of video features (the statistic behind FVD).

The statistics and the distance are ours; the feature encoder is the user's (a local video or image model:
`ImageFeatureEncoder` mean-pools a transformers vision model over frames). Nothing is downloaded.
"""

from __future__ import annotations

import numpy as np


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of `(N, D)` features (float64)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need (N >= 2, D) features, got {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), computed with symmetric eigendecompositions."""
    root1 = _sqrt_psd(s1)
    cross = _sqrt_psd(root1 @ s2 @ root1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def fvd(features_a: np.ndarray, features_b: np.ndarray) -> float:
    return frechet_distance(*feature_stats(features_a), *feature_stats(features_b))


class ImageFeatureEncoder:
    """Video features from a local transformers vision model (CLIP / SigLIP / ViT): pooled output per frame,
    averaged over the video's frames."""

    def __init__(self, folder: str):
        import torch
        from transformers import AutoImageProcessor, AutoModel

        self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.vision = getattr(model, "vision_model", model)
        self.torch = torch

    def __call__(self, video: np.ndarray) -> np.ndarray:
        """`(F, H, W, 3)` uint8 -> `(D,)`."""
        with self.torch.no_grad():
            inputs = self.processor(images=list(video), return_tensors="pt")
            pooled = self.vision(pixel_values=inputs.pixel_values).pooler_output
        return pooled.mean(dim=0).numpy()
