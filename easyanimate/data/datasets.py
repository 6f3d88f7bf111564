"""The training dataset: images and videos from metadata records, at the shape the bucket sampler asks for.

Videos: `num_frames` frames every `frame_stride`, inside a window that drops the first and last 10% (the
`edge_drop` share) where fades and titles live; the window falls back to the whole video when it is too
short. Frames are scaled to cover the target and cropped (random in training, centred otherwise). Captions
are dropped (empty text) with probability `caption_dropout`, for classifier-free guidance.

A missing, empty, corrupt or too-short file is skipped with a warning and counted; another sample of the same
kind takes its place, so training never stops on one bad file. Randomness is a pure function of
(seed, epoch, index).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .formats import Record
from .transforms import resize_crop
from .video_io import read_frames, read_image, video_length

logger = logging.getLogger(__name__)


@dataclass
class SampleSpec:
    """What the sampler asks for: record index, pixel height and width, frames (1 for images)."""

    index: int
    height: int
    width: int
    num_frames: int


def frame_indices(
    total: int, count: int, stride: int, edge_drop: float, rng: np.random.Generator | None
) -> list[int]:
    """`count` indices `stride` apart inside the edge-trimmed window (the whole video if that is too short)."""
    span = (count - 1) * stride + 1
    if span > total:
        raise ValueError(f"too short: {total} frames, {span} needed")
    lo, hi = int(total * edge_drop), int(np.ceil(total * (1 - edge_drop)))
    if hi - lo < span:
        lo, hi = 0, total
    start = lo + (int(rng.integers(0, hi - lo - span + 1)) if rng is not None else (hi - lo - span) // 2)
    return list(range(start, start + span, stride))


class VideoDataset(Dataset):
    def __init__(
        self,
        records: list[Record],
        height: int = 256,
        width: int = 256,
        num_frames: int = 17,
        frame_stride: int = 1,
        edge_drop: float = 0.1,
        caption_dropout: float = 0.0,
        random_crop: bool = True,
        seed: int = 0,
        max_retries: int = 20,
    ):
        if not records:
            raise ValueError("the dataset has no records")
        self.records = records
        self.height, self.width, self.num_frames = height, width, num_frames
        self.frame_stride, self.edge_drop = frame_stride, edge_drop
        self.caption_dropout, self.random_crop = caption_dropout, random_crop
        self.seed, self.epoch, self.max_retries = seed, 0, max_retries
        self.skipped: dict[str, str] = {}
        self._by_type = {t: [i for i, r in enumerate(records) if r.type == t] for t in ("image", "video")}

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def _load(self, record: Record, spec: SampleSpec, rng: np.random.Generator | None) -> torch.Tensor:
        size = (spec.height, spec.width)
        if record.type == "image":
            return resize_crop(read_image(record.path)[None], size, rng)
        total = record.num_frames or video_length(record.path)
        idx = frame_indices(total, spec.num_frames, self.frame_stride, self.edge_drop, rng)
        return resize_crop(read_frames(record.path, idx), size, rng)

    def __getitem__(self, item: int | SampleSpec) -> dict:
        spec = item if isinstance(item, SampleSpec) else SampleSpec(item, self.height, self.width, 0)
        record = self.records[spec.index]
        if spec.num_frames == 0:
            spec.num_frames = 1 if record.type == "image" else self.num_frames
        skipped = []
        index = spec.index
        pool = self._by_type[record.type]
        for attempt in range(self.max_retries):
            rng = np.random.default_rng([self.seed, self.epoch, index, attempt]) if self.random_crop else None
            record = self.records[index]
            try:
                pixels = self._load(record, SampleSpec(index, spec.height, spec.width, spec.num_frames), rng)
                break
            except Exception as err:  # any decode failure: count it and use another sample of this kind
                reason = f"{type(err).__name__}: {err}"
                if record.path not in self.skipped:
                    logger.warning("skipping %s: %s", record.path, reason)
                self.skipped[record.path] = reason
                skipped.append(record.path)
                pick = np.random.default_rng([self.seed, self.epoch, spec.index, attempt, 1])
                index = pool[int(pick.integers(0, len(pool)))]
        else:
            raise RuntimeError(
                f"{self.max_retries} unreadable {record.type} files in a row; last: {skipped[-1]}"
            )
        drop = np.random.default_rng([self.seed, self.epoch, index, 99]).random() < self.caption_dropout
        return {
            "pixels": pixels,
            "text": "" if drop else record.text,
            "type": record.type,
            "index": index,
            "skipped": skipped,
        }


def collate(samples: list[dict]) -> dict:
    """Stack one-shape samples (the bucket sampler guarantees one shape per batch)."""
    shapes = {tuple(s["pixels"].shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"a batch mixes shapes {sorted(shapes)}; use the bucket sampler")
    return {
        "pixels": torch.stack([s["pixels"] for s in samples]),
        "text": [s["text"] for s in samples],
        "type": samples[0]["type"],
        "index": [s["index"] for s in samples],
        "skipped": [p for s in samples for p in s["skipped"]],
    }
