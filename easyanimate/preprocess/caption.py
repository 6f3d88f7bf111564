"""Captioning with a vision-language model from a local folder (transformers image-to-text models,
e.g. BLIP); frames sampled per clip, clips batched."""

from __future__ import annotations

import numpy as np

from .config import CaptionConfig
from .filters.frames import sample_frames


class Captioner:
    def __init__(self, cfg: CaptionConfig):
        import torch
        import transformers
        from transformers import AutoProcessor

        cls = (
            getattr(transformers, "AutoModelForImageTextToText", None) or transformers.AutoModelForVision2Seq
        )
        self.processor = AutoProcessor.from_pretrained(cfg.model, local_files_only=True)
        self.model = cls.from_pretrained(cfg.model, local_files_only=True).eval()
        self.cfg, self.torch = cfg, torch

    def __call__(self, frames: list[np.ndarray]) -> list[str]:
        kwargs = {"text": [self.cfg.prompt] * len(frames)} if self.cfg.prompt else {}
        inputs = self.processor(images=frames, return_tensors="pt", **kwargs)
        with self.torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens)
        return [t.strip() for t in self.processor.batch_decode(out, skip_special_tokens=True)]


def caption_frames(record: dict, cfg: CaptionConfig) -> list[np.ndarray]:
    """The clip's middle frame(s) for the captioner."""
    count = max(cfg.num_frames, 1)
    frames = sample_frames(record["file_path_abs"], count + 2, record["num_frames"])
    return list(frames[1:-1]) if len(frames) > 2 else list(frames)
