"""A plain folder of images and videos as training batches (used by VAE training).

Every batch is a pure function of `(seed, step, rank)`: a resumed run sees exactly the batches it would have
seen, processes never share a batch, and no sampler state needs saving. A missing, corrupt or too-short file
is skipped with a warning and counted (`skipped`); training never stops on one bad file.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from .transforms import resize_crop
from .video_io import media_type, read_frames, read_image, video_length

logger = logging.getLogger(__name__)


def scan_media(root: str) -> tuple[list[str], list[str]]:
    """Sorted (videos, images) below `root`."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data folder not found: {root}")
    videos, images = [], []
    for folder, _, files in os.walk(root):
        for name in files:
            kind = media_type(name)
            path = os.path.join(folder, name)
            if kind == "video":
                videos.append(path)
            elif kind == "image":
                images.append(path)
    return sorted(videos), sorted(images)


class MediaFolder:
    def __init__(
        self,
        root: str,
        num_frames: int,
        size: int,
        batch_size: int = 1,
        image_ratio: float = 0.25,
        seed: int = 0,
        rank: int = 0,
        frame_stride: int = 1,
    ):
        self.videos, self.images = scan_media(root)
        if not self.videos and not self.images:
            raise FileNotFoundError(f"no images or videos under {root}")
        self.root, self.num_frames, self.size = root, num_frames, size
        self.batch_size, self.image_ratio, self.seed, self.rank = batch_size, image_ratio, seed, rank
        self.frame_stride = frame_stride
        self.skipped: dict[str, str] = {}
        self._lengths: dict[str, int] = {}

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def _skip(self, path: str, reason: str) -> None:
        if path not in self.skipped:
            self.skipped[path] = reason
            logger.warning("skipping %s: %s (%d skipped so far)", path, reason, len(self.skipped))

    def _video_length(self, path: str) -> int:
        if path not in self._lengths:
            self._lengths[path] = video_length(path)
        return self._lengths[path]

    def _video_clip(self, path: str, frames: int, rng: np.random.Generator | None) -> torch.Tensor:
        span = (frames - 1) * self.frame_stride + 1
        n = self._video_length(path)
        if n < span:
            raise ValueError(f"too short: {n} frames, need {span}")
        start = int(rng.integers(0, n - span + 1)) if rng is not None else 0
        idx = list(range(start, start + span, self.frame_stride))
        return resize_crop(read_frames(path, idx), self.size, rng)

    def _image(self, path: str, rng: np.random.Generator | None) -> torch.Tensor:
        return resize_crop(read_image(path)[None], self.size, rng)

    def _load(self, kind: str, rng: np.random.Generator) -> torch.Tensor:
        """One sample; bad files are skipped and another is drawn (bounded tries)."""
        pool = self.images if kind == "image" and self.images else self.videos
        frames = 1 if kind == "image" else self.num_frames
        for _ in range(max(20, 2 * len(pool))):
            path = pool[int(rng.integers(0, len(pool)))]
            if path in self.skipped:
                continue
            try:
                if pool is self.images:
                    return self._image(path, rng)
                return self._video_clip(path, frames, rng)
            except Exception as err:  # any decode failure: count it, keep training
                self._skip(path, f"{type(err).__name__}: {err}")
        raise RuntimeError(f"no readable {kind} samples left under {self.root} ({self.num_skipped} skipped)")

    def batch(self, step: int) -> dict[str, torch.Tensor | str]:
        rng = np.random.default_rng([self.seed, step, self.rank])
        want_image = not self.videos or (rng.random() < self.image_ratio)
        kind = "image" if want_image else "video"
        pixels = torch.stack([self._load(kind, rng) for _ in range(self.batch_size)])
        return {"pixels": pixels, "kind": kind}

    def validation_clip(self) -> torch.Tensor:
        """A fixed clip (first video, first frames, centre crop) or the first image: `(1, 3, F, S, S)`."""
        for path in self.videos:
            try:
                return self._video_clip(path, self.num_frames, None)[None]
            except Exception as err:
                self._skip(path, f"{type(err).__name__}: {err}")
        return self._image(self.images[0], None)[None]


class StepBatches(Dataset):
    """Batches for steps `start .. stop-1`, for a DataLoader with workers (`batch_size=None`)."""

    def __init__(self, folder: MediaFolder, start: int, stop: int):
        self.folder, self.start, self.stop = folder, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | str]:
        return self.folder.batch(self.start + i)
