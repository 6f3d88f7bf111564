"""The frame and size rule a model sets: the one source of valid frame counts and multiples of `s` pixels.

Our causal VAE encodes the first frame alone and then groups of `r` frames (its temporal ratio), so a video
has `1 + rk` frames. Upstream EasyAnimate's V2 VAE encodes independent 9-frame chunks (1 or 9k frames) and its
V3 VAE independent 8-frame slices after a lone first frame (8k or 1 + 8k); v1's per-frame VAE takes any count.
Height and width are multiples of the spatial ratio, times the transformer's patch size when a DiT denoises the
latents. Every check and help text reads this rule from the model instead of assuming numbers.
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
    temporal_ratio: int = 4  # video frames per latent frame (after a lone first frame)
    size_multiple: int = 16  # height and width are multiples of this
    # 0: frames are 1 + temporal_ratio * k (a causal VAE). Otherwise frames come in independent blocks of this
    # many (1 frame alone is an image), and `lone_first` allows one extra leading frame (1 + block * k).
    frame_block: int = 0
    lone_first: bool = False

    @classmethod
    def of(cls, vae, transformer=None) -> ShapeRule:
        """The rule of a VAE (and the transformer on its latents: its patch size multiplies the size rule)."""
        rule = getattr(vae, "frame_rule", None) or cls(
            vae.temporal_compression_ratio, vae.spatial_compression_ratio
        )
        return rule.with_patch(transformer.config.patch_size) if transformer is not None else rule

    def with_patch(self, patch_size: int) -> ShapeRule:
        """This VAE rule for a transformer that patchifies its latents by `patch_size`."""
        return ShapeRule(
            self.temporal_ratio, self.size_multiple * patch_size, self.frame_block, self.lone_first
        )

    @property
    def frames_form(self) -> str:
        """`1 + 4k`, `8k or 1 + 8k`, `1 or 9k`: the rule in short, for errors."""
        b = self.frame_block
        if not b:
            return f"1 + {self.temporal_ratio}k"
        return f"{b}k or 1 + {b}k" if self.lone_first else f"1 or {b}k"

    @property
    def frames_text(self) -> str:
        """`1 + 4k (1, 5, 9, ...)` for the help texts and errors."""
        top = 4 * max(self.frame_block, self.temporal_ratio) + 2
        examples = [str(f) for f in range(1, top) if self.frames_ok(f)][:4]
        return f"{self.frames_form} ({', '.join(examples)}, ...)"

    def frames_ok(self, num_frames: int) -> bool:
        if num_frames < 1:
            return False
        b = self.frame_block
        if not b:
            return (num_frames - 1) % self.temporal_ratio == 0
        return num_frames == 1 or num_frames % b == 0 or (self.lone_first and (num_frames - 1) % b == 0)

    def nearest(self, num_frames: int) -> tuple[int, int]:
        """The valid counts just below (at least 1) and above `num_frames`."""
        below = max(num_frames, 1)
        while below > 1 and not self.frames_ok(below):
            below -= 1
        above = max(num_frames, 1)
        while not self.frames_ok(above):
            above += 1
        return below, above

    def size_ok(self, value: int) -> bool:
        return value > 0 and value % self.size_multiple == 0

    def check_frames(self, num_frames: int, name: str = "num_frames") -> None:
        if not self.frames_ok(num_frames):
            below, above = self.nearest(num_frames)
            raise ValueError(
                f"{name} must be {self.frames_form}, got {num_frames} (nearest: {below} or {above})"
            )

    def check_size(self, height: int, width: int) -> None:
        if not (self.size_ok(height) and self.size_ok(width)):
            raise ValueError(
                f"height and width must be positive multiples of {self.size_multiple}, got {height}x{width}"
            )

    def latent_frames(self, num_frames: int) -> int:
        if not self.frame_block:
            return 1 + (num_frames - 1) // self.temporal_ratio
        head = 1 if num_frames == 1 else num_frames % self.frame_block
        return head + (num_frames - head) // self.temporal_ratio
