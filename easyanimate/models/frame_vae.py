"""EasyAnimate v1's VAE: Stable Diffusion's 2D `AutoencoderKL` (PixArt-alpha's `vae/`) applied to each frame.

Latent frames = video frames (any count), 8x spatial. The same interface as `SliceVAE` (`encode_latents`,
`decode_latents`, `latent_frames`, ratios, `shape_rule`), so the pipeline runs a PixArt folder with v1's
motion modules unchanged.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from .devices import execution_device
from .shape_rule import ShapeRule


def config_shape_rule(config) -> ShapeRule:
    """Any frame count; 2^(blocks-1) spatial (SD's four blocks: 8x), from a config alone."""
    return ShapeRule(1, 2 ** (len(config.get("block_out_channels", (64,) * 4)) - 1))


class FrameVAE(AutoencoderKL):
    temporal_compression_ratio = 1
    frames_per_call = 8  # frames encoded / decoded together (a memory knob: results do not depend on it)

    @property
    def spatial_compression_ratio(self) -> int:
        return config_shape_rule(self.config).size_multiple

    def latent_frames(self, num_frames: int) -> int:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        return num_frames

    @property
    def shape_rule(self) -> ShapeRule:
        return ShapeRule.of(self)

    def _per_frame(self, video: torch.Tensor, fn) -> torch.Tensor:
        """`(B, C, F, H, W)` -> `fn` on the frames in groups -> `(B, C', F, H', W')`."""
        b, _, f = video.shape[:3]
        frames = video.transpose(1, 2).reshape(b * f, *video.shape[1:2], *video.shape[3:])
        out = torch.cat([fn(chunk) for chunk in frames.split(self.frames_per_call)])
        return out.reshape(b, f, *out.shape[1:]).transpose(1, 2)

    def encode_latents(
        self, pixels: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False
    ) -> torch.Tensor:
        """Pixels `(B, 3, F, H, W)` in [-1, 1] -> scaled latents `(B, C, F, H/8, W/8)`."""
        pixels = pixels.to(execution_device(self), self.dtype)

        def encode(x):
            posterior = self.encode(x).latent_dist
            return posterior.sample(generator=generator) if sample else posterior.mode()

        return self._per_frame(pixels, encode) * self.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> pixels `(B, 3, F, H, W)` in about [-1, 1]."""
        latents = (latents / self.config.scaling_factor).to(execution_device(self), self.dtype)
        return self._per_frame(latents, lambda z: self.decode(z).sample)
