"""Temporal pyramid (Pyramid Flow's autoregressive half): each latent frame generated from the ones before it,
older history at lower resolution.

The model (motion modules causal in time, `autoregressive_history` in its config) sees, when it generates latent
frame i, the `len(history)` frames before it, the one at distance d averaged over `history[d - 1]` x
`history[d - 1]` blocks: few tokens for the past, full detail for the recent. Training teaches exactly that:
a micro-batch draws which frame is the present, takes the clean frames before it (compressed the same way) as
history at noise level 0, and noises the present frame with the run's objective (plain flow or the spatial
pyramid, so both pyramids combine). The loss is on the present frame only.

Chunks (`autoregressive_chunk` C > 1, Pyramid Flow's "chunk by chunk"): the model denoises up to C latent frames
at once, counting its history: `max(1, C - len(history))` new frames, causal among themselves. With C the clips'
latent length, a video of the training length is one chunk without history (a whole clip: what the spatial pyramid
alone costs); longer ones continue after a full window of history, C - window frames at a time. Training draws
the first chunk (no history) half the time by default (`objective.first_chunk_share`), since every video starts
with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .pyramid import down


@dataclass(frozen=True)
class TemporalPyramid:
    history: tuple[int, ...] = (1, 2, 4, 4)  # compression factor by distance; its length is the window
    chunk: int = 1  # latent frames denoised together, history included (1: frame by frame)

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise ValueError(f"autoregressive_chunk must be at least 1, got {self.chunk}")

    @property
    def window(self) -> int:
        return len(self.history)

    @property
    def coarsest(self) -> int:
        return max(self.history)

    def present_count(self, done: int) -> int:
        """How many frames the next chunk denoises after `done` generated ones."""
        return max(1, self.chunk - min(done, self.window))

    def compress(self, past: list[torch.Tensor]) -> list[torch.Tensor]:
        """The history the model sees for the frame after `past` (oldest first, each `(B, C, H, W)`): the last
        `window` frames, each averaged by its distance's factor."""
        past = past[-self.window :] if self.window else []
        n = len(past)
        return [down(x, self.history[n - 1 - j]) for j, x in enumerate(past)]

    def training_split(
        self, x0: torch.Tensor, generator: torch.Generator, first_share: float = 0.5
    ) -> tuple[list[torch.Tensor], torch.Tensor, int]:
        """A random present frame of `x0` `(B, C, F, H, W)`: `(history, present, index)`; with chunks, the
        present is the `(B, C, n, H, W)` frames of the chunk starting at `index`, the first chunk forced in a
        `first_share` of the draws (the rest start anywhere, the first chunk included)."""
        f = x0.shape[2]
        dev = generator.device
        i = int(torch.randint(f, (1,), generator=generator, device=dev))
        if self.chunk > 1 and float(torch.rand(1, generator=generator, device=dev)) < first_share:
            i = 0  # the first chunk: no history
        history = self.compress(list(x0[:, :, :i].unbind(2)))
        if self.chunk == 1:
            return history, x0[:, :, i], i
        return history, x0[:, :, i : i + self.present_count(i)], i


def temporal_pyramid_of(config: Any) -> TemporalPyramid | None:
    """The temporal pyramid a transformer config asks for (`autoregressive_history`), else None."""
    history = config.get("autoregressive_history") if config is not None else None
    if not history:
        return None
    return TemporalPyramid(tuple(int(f) for f in history), int(config.get("autoregressive_chunk") or 1))
