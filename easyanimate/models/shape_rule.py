"""The frame and size rule a model sets: the one source of `1 + rk` frames and multiples of `s` pixels.

The causal VAE encodes the first frame alone and then groups of `r` frames (its temporal ratio), so a video
has `1 + rk` frames; height and width are multiples of its spatial ratio, times the transformer's patch size
when a DiT denoises the latents. EasyAnimate's VAE: 1 + 4k frames, multiples of 16 with patch 2; the demo VAE:
1 + 2k, multiples of 8. Every check and help text reads this rule from the model instead of assuming numbers.
"""

from __future__ import annotations

from dataclasses import dataclass


def nearest_valid_frames(num_frames: int, ratio: int = 4) -> tuple[int, int]:
    """The valid counts (1 + ratio*k) just below and above `num_frames`."""
    below = 1 + ratio * max((num_frames - 1) // ratio, 0)
    above = below if below >= num_frames else below + ratio
    return below, above


@dataclass(frozen=True)
class ShapeRule:
    temporal_ratio: int = 4  # frames are 1 + temporal_ratio * k
    size_multiple: int = 16  # height and width are multiples of this

    @classmethod
    def of(cls, vae, transformer=None) -> ShapeRule:
        """The rule of a VAE (and the transformer on its latents: its patch size multiplies the size rule)."""
        rule = cls(vae.temporal_compression_ratio, vae.spatial_compression_ratio)
        return rule.with_patch(transformer.config.patch_size) if transformer is not None else rule

    def with_patch(self, patch_size: int) -> ShapeRule:
        """This VAE rule for a transformer that patchifies its latents by `patch_size`."""
        return ShapeRule(self.temporal_ratio, self.size_multiple * patch_size)

    @property
    def frames_text(self) -> str:
        """`1 + 4k (1, 5, 9, ...)` for the help texts and errors."""
        r = self.temporal_ratio
        return f"1 + {r}k ({', '.join(str(1 + r * k) for k in range(3))}, ...)"

    def frames_ok(self, num_frames: int) -> bool:
        return num_frames >= 1 and (num_frames - 1) % self.temporal_ratio == 0

    def size_ok(self, value: int) -> bool:
        return value > 0 and value % self.size_multiple == 0

    def check_frames(self, num_frames: int, name: str = "num_frames") -> None:
        if not self.frames_ok(num_frames):
            below, above = nearest_valid_frames(num_frames, self.temporal_ratio)
            raise ValueError(
                f"{name} must be 1 + {self.temporal_ratio}k, got {num_frames} (nearest: {below} or {above})"
            )

    def check_size(self, height: int, width: int) -> None:
        if not (self.size_ok(height) and self.size_ok(width)):
            raise ValueError(
                f"height and width must be positive multiples of {self.size_multiple}, got {height}x{width}"
            )

    def latent_frames(self, num_frames: int) -> int:
        return 1 + (num_frames - 1) // self.temporal_ratio
