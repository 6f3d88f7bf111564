"""Quality: a weight-free technical score (sharpness, brightness, contrast) over 4 uniformly spaced frames,
and an optional aesthetic score from a local CLIP/SigLIP vision model + MLP head."""

from __future__ import annotations

import os

import numpy as np

from ..config import QualityFilter
from .frames import sample_frames, to_gray


def technical_scores(frames: np.ndarray) -> dict[str, float]:
    import cv2

    sharp, bright, contrast = [], [], []
    for f in frames:
        g = to_gray(f)
        sharp.append(float(cv2.Laplacian(g, cv2.CV_64F).var()))
        bright.append(float(g.mean()))
        contrast.append(float(g.std()))
    return {
        "sharpness": float(np.mean(sharp)),
        "brightness": float(np.mean(bright)),
        "contrast": float(np.mean(contrast)),
    }


def quality_filter(record: dict, cfg: QualityFilter, aesthetic=None) -> tuple[bool, str | None]:
    frames = sample_frames(record["file_path_abs"], 4, record["num_frames"])
    scores = technical_scores(frames)
    record.update({k: round(v, 3) for k, v in scores.items()})
    if aesthetic is not None:
        record["aesthetic"] = round(float(aesthetic(frames)), 3)
    if scores["sharpness"] < cfg.min_sharpness:
        return False, "quality: blurry"
    if not cfg.min_brightness <= scores["brightness"] <= cfg.max_brightness:
        return False, "quality: too dark or too bright"
    if scores["contrast"] < cfg.min_contrast:
        return False, "quality: low contrast"
    if aesthetic is not None and record["aesthetic"] < cfg.min_aesthetic:
        return False, "quality: aesthetic"
    return True, None


class AestheticScorer:
    """Mean over frames of an MLP head on normalised image embeddings (LAION-aesthetic style).

    The folder holds a transformers CLIP or SigLIP vision model with its image processor, and
    `aesthetic_head.safetensors` (keys `layers.N.weight` / `layers.N.bias` of Linear layers, ReLU between).
    """

    def __init__(self, folder: str):
        import torch
        from safetensors.torch import load_file
        from transformers import AutoImageProcessor, AutoModel

        head_path = os.path.join(folder, "aesthetic_head.safetensors")
        if not os.path.isfile(head_path):
            raise FileNotFoundError(f"aesthetic head not found: {head_path}")
        self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.vision = getattr(model, "vision_model", model)
        self.projection = getattr(model, "visual_projection", None)
        state = load_file(head_path)
        n = len({k.split(".")[1] for k in state})
        self.layers = [(state[f"layers.{i}.weight"], state[f"layers.{i}.bias"]) for i in range(n)]
        self.torch = torch

    def __call__(self, frames: np.ndarray) -> float:
        torch = self.torch
        with torch.no_grad():
            inputs = self.processor(images=list(frames), return_tensors="pt")
            pooled = self.vision(pixel_values=inputs.pixel_values).pooler_output
            x = self.projection(pooled) if self.projection is not None else pooled
            x = x / x.norm(dim=-1, keepdim=True)
            for i, (w, b) in enumerate(self.layers):
                x = torch.nn.functional.linear(x, w, b)
                if i < len(self.layers) - 1:
                    x = torch.relu(x)
        return float(x.mean())
