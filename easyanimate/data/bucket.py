"""Aspect-ratio buckets, token-length frame counts, and a deterministic, sharded, resumable batch sampler.

Every batch holds one shape: items go to the bucket whose aspect ratio is nearest theirs (images and videos
in separate buckets), and the dataset scales-and-crops to the bucket, so no padding is ever needed.

Token-length training (CogVideoX-Fun / EasyAnimate v4): one budget for all resolutions, the pixel volume of
`base_size x base_size x base_frames` (512x512x49 = 13,312 latent tokens); a bucket's frame count is the
largest `1 + 4k` whose volume fits: 512x512 -> 49, 768x768 -> 21, 1024x1024 -> 9.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler

from .datasets import SampleSpec
from .formats import Record

# height / width ratios from 1:4 (wide) to 4:1 (tall), denser near square where most data lives
DEFAULT_RATIOS = (
    0.25, 0.33, 0.4, 0.5, 0.57, 0.6, 0.67, 0.75, 0.8, 0.88, 1.0,
    1.14, 1.25, 1.33, 1.5, 1.67, 1.75, 2.0, 2.5, 3.0, 4.0,
)  # fmt: skip


def aspect_ratio_buckets(
    base_size: int = 512, multiple: int = 16, ratios: Sequence[float] = DEFAULT_RATIOS
) -> dict[float, tuple[int, int]]:
    """ratio -> (height, width), multiples of `multiple`, area close to `base_size`^2."""
    table: dict[float, tuple[int, int]] = {}
    for r in ratios:
        h = max(multiple, round(base_size * math.sqrt(r) / multiple) * multiple)
        w = max(multiple, round(base_size / math.sqrt(r) / multiple) * multiple)
        table[r] = (h, w)
    return table


def nearest_bucket(height: int, width: int, buckets: dict[float, tuple[int, int]]) -> tuple[int, int]:
    ratio = height / width
    key = min(buckets, key=lambda r: abs(math.log(buckets[r][0] / buckets[r][1]) - math.log(ratio)))
    return buckets[key]


@dataclass(frozen=True)
class TokenLengthRule:
    base_size: int = 512
    base_frames: int = 49
    max_frames: int | None = None
    temporal_ratio: int = 4
    tokens_per_pixel: float = 1 / 256  # VAE 8x8 then 2x2 patches

    @property
    def token_budget(self) -> int:
        latent_frames = 1 + (self.base_frames - 1) // self.temporal_ratio
        return int(self.base_size**2 * self.tokens_per_pixel * latent_frames)

    def frames_for(self, height: int, width: int) -> int:
        fit = self.base_size**2 * self.base_frames / (height * width)
        frames = 1 + self.temporal_ratio * max(0, math.floor((fit - 1) / self.temporal_ratio))
        if self.max_frames is not None:
            frames = min(frames, 1 + self.temporal_ratio * ((self.max_frames - 1) // self.temporal_ratio))
        return frames


def record_sizes(records: Sequence[Record]) -> list[tuple[int, int]]:
    """(height, width) per record: from the metadata, else read from the file header."""
    sizes = []
    for r in records:
        if r.height and r.width:
            sizes.append((r.height, r.width))
            continue
        try:
            if r.type == "image":
                from PIL import Image

                with Image.open(r.path) as im:
                    sizes.append((im.height, im.width))
            else:
                import av

                with av.open(r.path) as c:
                    s = c.streams.video[0]
                    sizes.append((s.height, s.width))
        except Exception:  # unreadable: bucket it as square; the dataset skips and counts it when loading
            sizes.append((1, 1))
    return sizes


class BucketBatchSampler(Sampler[list[SampleSpec]]):
    """Batches of `SampleSpec`s, one shape per batch.

    Deterministic for (seed, epoch); each of `num_replicas` processes gets a disjoint, equally long share;
    `state_dict()` / `load_state_dict()` resume mid-epoch at the next unseen batch.

    Rank-synchronised: batches are drawn in groups of `num_replicas x batches_per_step` of one bucket (one media
    kind, one shape), the groups shuffled with the shared seed, and process r takes batches r, r + R, ... of
    each group. So the i-th batch of every process has the same shape, and an optimizer step of
    `batches_per_step` micro-batches (gradient accumulation) sees one kind on every process: every trainable
    parameter then gets a gradient on every process in every step (DDP, ZeRO and FSDP need that).
    """

    def __init__(
        self,
        records: Sequence[Record],
        batch_size: int,
        base_size: int = 512,
        num_frames: int = 17,
        token_rule: TokenLengthRule | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = True,
        multiple: int = 16,
        sizes: Sequence[tuple[int, int]] | None = None,
        batches_per_step: int = 1,
    ):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if batches_per_step < 1:
            raise ValueError(f"batches_per_step must be >= 1, got {batches_per_step}")
        self.batch_size, self.seed, self.drop_last = batch_size, seed, drop_last
        self.num_replicas, self.rank, self.batches_per_step = num_replicas, rank, batches_per_step
        self.buckets = aspect_ratio_buckets(base_size, multiple)
        sizes = list(sizes) if sizes is not None else record_sizes(records)
        self.groups: dict[tuple[str, int, int, int], list[int]] = {}
        for i, (r, (h, w)) in enumerate(zip(records, sizes)):
            bh, bw = nearest_bucket(h, w, self.buckets)
            frames = 1 if r.type == "image" else (token_rule.frames_for(bh, bw) if token_rule else num_frames)
            self.groups.setdefault((r.type, bh, bw, frames), []).append(i)
        self.epoch = 0
        self.position = 0  # batches of this epoch already handed out by this rank

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position = epoch, 0

    def _epoch_batches(self) -> list[tuple[tuple[str, int, int, int], list[int]]]:
        """This rank's batches of the epoch; the same draw on every rank (seed, epoch), so shapes line up."""
        rng = np.random.default_rng([self.seed, self.epoch])
        per_group = self.num_replicas * self.batches_per_step
        groups = []
        for key in sorted(self.groups):
            members = [self.groups[key][i] for i in rng.permutation(len(self.groups[key]))]
            chunks = [members[s : s + self.batch_size] for s in range(0, len(members), self.batch_size)]
            if self.drop_last:
                chunks = [c for c in chunks if len(c) == self.batch_size]
            # a group is one bucket for all ranks and micro-batches of a step; an incomplete one is dropped
            for g in range(0, len(chunks) - per_group + 1, per_group):
                groups.append((key, chunks[g : g + per_group]))
        order = rng.permutation(len(groups))
        return [
            (groups[i][0], chunk) for i in order for chunk in groups[i][1][self.rank :: self.num_replicas]
        ]

    def __len__(self) -> int:
        return len(self._epoch_batches())

    def __iter__(self) -> Iterator[list[SampleSpec]]:
        batches = self._epoch_batches()
        while self.position < len(batches):
            (_, h, w, frames), chunk = batches[self.position]
            self.position += 1
            yield [SampleSpec(i, h, w, frames) for i in chunk]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"sampler state is for seed {state['seed']}, this sampler uses {self.seed}")
        self.epoch, self.position = state["epoch"], state["position"]


def bucket_summary(sampler: BucketBatchSampler) -> str:
    lines = [f"{t:5s} {h}x{w} x{f}: {len(ix)} items" for (t, h, w, f), ix in sorted(sampler.groups.items())]
    return os.linesep.join(lines)
