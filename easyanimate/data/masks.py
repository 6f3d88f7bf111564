"""Inpaint masks for image-to-video training (1 = generate, 0 = keep), drawn with set probabilities.

Kinds: first frame kept, first and last kept, first k frames kept (continuation), random boxes to generate
(the rest kept), whole video generated, nothing generated. Images get a mask (generate) or none (keep).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

VIDEO_MASKS = ("first", "first_last", "head", "boxes", "all", "none")


@dataclass
class MaskConfig:
    """Probability of each video mask kind (normalised by their sum), and of "generate all" for images."""

    first: float = 0.4  # keep the first frame (image-to-video)
    first_last: float = 0.2  # keep the first and last frames
    head: float = 0.1  # keep the first k frames (continuation)
    boxes: float = 0.1  # generate random boxes, keep the rest
    all: float = 0.15  # generate everything (text-to-video)
    none: float = 0.05  # keep everything
    image_mask_prob: float = 0.5  # images: share that get "generate everything"

    @property
    def video(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in VIDEO_MASKS}

    def __post_init__(self) -> None:
        probs = self.video
        if sum(probs.values()) <= 0 or any(p < 0 for p in probs.values()):
            raise ValueError(f"mask probabilities must be >= 0 and not all zero, got {probs}")
        if not 0 <= self.image_mask_prob <= 1:
            raise ValueError(f"image_mask_prob must be in [0, 1], got {self.image_mask_prob}")


def sample_mask(
    num_frames: int, height: int, width: int, rng: np.random.Generator, config: MaskConfig | None = None
) -> tuple[torch.Tensor, str]:
    """`(mask (1, F, H, W), kind)`."""
    config = config or MaskConfig()
    if num_frames == 1:
        generate = rng.random() < config.image_mask_prob
        return torch.full((1, 1, height, width), float(generate)), "image_mask" if generate else "image_none"
    kinds = list(config.video)
    probs = np.array([config.video[k] for k in kinds], dtype=np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=probs / probs.sum()))]
    mask = torch.ones(1, num_frames, height, width)
    if kind == "first":
        mask[:, 0] = 0
    elif kind == "first_last":
        mask[:, 0] = mask[:, -1] = 0
    elif kind == "head":
        k = int(rng.integers(1, num_frames))  # keep 1 .. F-1 frames
        mask[:, :k] = 0
    elif kind == "boxes":
        mask.zero_()
        for _ in range(int(rng.integers(1, 4))):
            bh, bw = (
                int(rng.integers(height // 4, height // 2 + 1)),
                int(rng.integers(width // 4, width // 2 + 1)),
            )
            top, left = int(rng.integers(0, height - bh + 1)), int(rng.integers(0, width - bw + 1))
            mask[:, :, top : top + bh, left : left + bw] = 1
    elif kind == "none":
        mask.zero_()
    return mask, kind
