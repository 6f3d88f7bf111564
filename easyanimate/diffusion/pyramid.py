"""Spatial pyramid flow matching (Jin et al., "Pyramidal Flow Matching", ICLR 2025), in our flow convention.

Our flow: `z(s) = (1 - s) x + s n`, velocity `dz/ds = n - x`; `s = 1` is pure noise. The pyramid splits the
trajectory into K stages; stage k runs at 1 / 2^k of the latent's height and width (k = 0: full size, K - 1:
coarsest, the first sampled) over noise levels `[lo_k, hi_k]`. Both endpoints of a stage are at its size and
share one noise draw `n_k` (coupled noise), so the flow inside a stage is a straight line:

    end   (s = lo_k):  (1 - lo_k) D_k(x)        + lo_k n_k
    start (s = hi_k):  (1 - hi_k) U(D_{k+1}(x)) + hi_k n_k      (coarsest stage: hi = 1, pure noise)

`D_k` averages 2^k x 2^k blocks, `U` repeats each value over a 2 x 2 block. With K = 1 this is plain flow matching.

Jumping from stage k + 1 (ended at `b = lo_{k+1}`) to stage k while sampling: `U(z)` has the right signal but its
noise is constant over each 2 x 2 block. Rescaling and adding block-residual noise fixes it:

    z' = U(z) / (1 + b) + s (g - U(D_1 g)),   s = 2 b / (1 + b),   g ~ N(0, I)

The noise part `U(n) / 2 + (g - U(D_1 g))` is again iid standard normal (block means of variance 1/4, in-block
residuals of variance 3/4, independent of them) and the signal part is `(1 - s) U(D_{k+1} x)`: exactly stage k's
start, so stage k must begin at `hi_k = 2 lo_{k+1} / (1 + lo_{k+1})` (the windows overlap: the jump adds noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def down(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average over `factor` x `factor` blocks of the last two (height, width) dimensions; any leading dims."""
    if factor == 1:
        return x
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"a {h}x{w} latent cannot be averaged over {factor}x{factor} blocks")
    return F.avg_pool2d(x.reshape(-1, 1, h, w), factor).reshape(*lead, h // factor, w // factor)


def up(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Repeat each value over a `factor` x `factor` block of the last two dimensions (nearest upsampling)."""
    return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def default_boundaries(stages: int) -> tuple[float, ...]:
    """`lo_1 .. lo_{K-1}` evenly spaced: k / K (K = 3: stages [2/3, 1], [1/3, 0.8], [0, 0.5])."""
    return tuple(k / stages for k in range(1, stages))


@dataclass(frozen=True)
class PyramidSchedule:
    """K stages and where each ends (`boundaries`: `lo_1 < ... < lo_{K-1}` in (0, 1); stage 0 ends at 0)."""

    stages: int = 3
    boundaries: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.stages <= 6:
            raise ValueError(f"pyramid stages must be 1..6, got {self.stages}")
        if self.boundaries is None:
            object.__setattr__(self, "boundaries", default_boundaries(self.stages))
        b = tuple(float(v) for v in self.boundaries)
        object.__setattr__(self, "boundaries", b)
        if len(b) != self.stages - 1:
            raise ValueError(f"{self.stages} pyramid stages need {self.stages - 1} boundaries, got {list(b)}")
        if any(not 0 < v < 1 for v in b) or any(x >= y for x, y in zip(b, b[1:])):
            raise ValueError(f"pyramid boundaries must rise strictly inside (0, 1), got {list(b)}")

    def window(self, k: int) -> tuple[float, float]:
        """Stage k's noise levels `(lo, hi)`."""
        lo = 0.0 if k == 0 else self.boundaries[k - 1]
        hi = 1.0 if k == self.stages - 1 else jump_level(self.boundaries[k])
        return lo, hi

    def factor(self, k: int) -> int:
        """How much smaller stage k's latent is per side."""
        return 2**k

    @property
    def coarsest(self) -> int:
        return 2 ** (self.stages - 1)

    def check_size(self, height: int, width: int, patch_size: int = 1) -> None:
        """Every stage's latent must still be a whole number of patches."""
        need = self.coarsest * patch_size
        if height % need or width % need:
            raise ValueError(
                f"a {self.stages}-stage pyramid needs latent height and width divisible by {need} "
                f"({self.coarsest} x patch size {patch_size}), got {height}x{width}"
            )

    def endpoints(self, x0: torch.Tensor, noise: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage k's `(end, start)` points for clean latents `x0` (full size) and `noise` at stage k's size."""
        lo, hi = self.window(k)
        target = down(x0, self.factor(k))
        coarse = up(down(target, 2)) if k < self.stages - 1 else torch.zeros_like(target)
        return (1 - lo) * target + lo * noise, (1 - hi) * coarse + hi * noise

    def point(
        self, x0: torch.Tensor, noise: torch.Tensor, k: int, u: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage k at fraction `u` `(B,)` of its window (0: its end, 1: its start): `(z, level, velocity)`, the
        noised latent, its noise level and the target `dz/ds` (all at stage k's size)."""
        lo, hi = self.window(k)
        end, start = self.endpoints(x0, noise, k)
        view = u.view(-1, *([1] * (x0.ndim - 1))).to(end.dtype)
        return (1 - view) * end + view * start, lo + u * (hi - lo), (start - end) / (hi - lo)


def jump_level(b: float) -> float:
    """The noise level a stage starts at when the coarser one ended at `b`."""
    return 2 * b / (1 + b)


def renoise_up(
    z: torch.Tensor, b: float, generator: torch.Generator | list[torch.Generator] | None = None
) -> torch.Tensor:
    """A coarser stage's last latent (noise level `b`) as the next stage's first (twice the size, level
    `jump_level(b)`): upsample, rescale, add the in-block noise the upsampling lacks."""
    if isinstance(generator, list):  # one per video, as pipelines take them: each video renoised by its own
        return torch.cat([renoise_up(z[i : i + 1], b, g) for i, g in enumerate(generator)])
    shape = (*z.shape[:-2], 2 * z.shape[-2], 2 * z.shape[-1])
    device = generator.device if generator is not None else z.device
    g = torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(z.device, z.dtype)
    return up(z) / (1 + b) + jump_level(b) * (g - up(down(g, 2)))


def stage_noise(noise: torch.Tensor, factor: int) -> torch.Tensor:
    """Unit-variance noise at 1 / `factor` size from full-size iid noise (block means times `factor`)."""
    return down(noise, factor) * factor
