"""Inpaint ("InP") conditioning for image-to-video, shared by inference and inpaint training.

Pixel space: a conditioning video (known frames, gray = 0 elsewhere) and a mask (1 = generate, 0 = keep).
Latent space, what the transformer sees besides the noisy latents (`in_channels = 2*C + 1`):
`[noisy latents, mask at latent size, VAE latents of the masked video]` on the channel axis.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import resize_crop
from ..data.video_io import read_frames, read_image


def load_image(image, height: int, width: int) -> torch.Tensor:
    """A path, PIL image or uint8 array -> `(3, H, W)` in [-1, 1], scaled to cover and centre-cropped."""
    if isinstance(image, str):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"image not found: {image}")
        array = read_image(image)
    else:
        array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    return resize_crop(array[None], (height, width), None)[:, 0]


def load_video(video, height: int, width: int, num_frames: int | None = None) -> torch.Tensor:
    """A path or uint8 array `(F, H, W, 3)` -> `(3, F, H, W)` in [-1, 1]; the first `num_frames` frames."""
    if isinstance(video, str):
        if not os.path.isfile(video):
            raise FileNotFoundError(f"video not found: {video}")
        try:
            frames = read_frames(video)
        except Exception as err:  # PyAV raises several error types for broken files
            raise ValueError(f"cannot read video {video}: {err}") from err
    else:
        frames = np.asarray(video)
    if num_frames is not None:
        if len(frames) < num_frames:
            raise ValueError(f"the video has {len(frames)} frames, {num_frames} are needed")
        frames = frames[:num_frames]
    return resize_crop(frames, (height, width), None)


def conditioning_video(
    num_frames: int,
    height: int,
    width: int,
    start: torch.Tensor | None = None,
    end: torch.Tensor | None = None,
    head: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(video (1, 3, F, H, W), mask (1, 1, F, H, W))` with the given frames kept.

    start / end: `(3, H, W)` first / last frame; head: `(3, K, H, W)` the first K frames (continuation).
    """
    video = torch.zeros(1, 3, num_frames, height, width)
    mask = torch.ones(1, 1, num_frames, height, width)
    if head is not None:
        k = head.shape[1]
        video[0, :, :k], mask[0, :, :k] = head, 0
    if start is not None:
        video[0, :, 0], mask[0, :, 0] = start, 0
    if end is not None:
        video[0, :, -1], mask[0, :, -1] = end, 0
    return video, mask


def latent_mask(mask: torch.Tensor, temporal: int = 4, spatial: int = 8) -> torch.Tensor:
    """Pixel mask `(B, 1, 1 + 4k, H, W)` -> `(B, 1, 1 + k, H/8, W/8)` (for the default ratios): the share of each
    latent's pixels to generate (the first frame alone, then groups of `temporal` frames, as the causal VAE
    compresses them)."""
    first = F.avg_pool3d(mask[:, :, :1], (1, spatial, spatial))
    if mask.shape[2] == 1:
        return first
    rest = F.avg_pool3d(mask[:, :, 1:], (temporal, spatial, spatial))
    return torch.cat([first, rest], dim=2)


def vae_latent_mask(vae, mask: torch.Tensor) -> torch.Tensor:
    """`latent_mask` at this VAE's compression ratios (the demo VAE compresses 4x / 2x, the others 8x / 4x)."""
    return latent_mask(mask, vae.temporal_compression_ratio, vae.spatial_compression_ratio)


@torch.no_grad()
def inpaint_latents(vae, video: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(mask at latent size, scaled VAE latents of the masked video)`; generated regions are gray (0)."""
    latents = vae.encode_latents(video * (1 - mask))
    return vae_latent_mask(vae, mask).to(latents), latents


@torch.no_grad()
def upstream_inpaint_latents(
    vae, video: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream V3 InP conditioning (`in_channels = 3*C`): `(VAE latents of the 0/1 mask tiled to 3 channels,
    VAE latents of the masked video)`, generated regions filled with -1 as upstream fills them."""
    masked = torch.where(mask > 0.5, torch.full_like(video, -1.0), video)
    return vae.encode_latents(mask.expand(-1, 3, -1, -1, -1)), vae.encode_latents(masked)


class ClipTokens:
    """Upstream V3 InP's CLIP image tokens, step by step: the start image's CLIP embedding with a ones mask for
    the last `apply_ratio` of the steps, zeros with a zero mask before (and for the unconditional half, and when
    there is no image), as upstream applies them."""

    def __init__(
        self, transformer, image_encoder, feature_extractor, image, batch: int, device, apply_ratio=0.5
    ):
        projection = transformer.clip_projection
        self.apply_ratio = apply_ratio
        self.zeros = torch.zeros(batch, projection.linear_1.in_features, device=device)
        self.zero_mask = torch.zeros(batch, projection.tokens, device=device)
        self.embeds = None
        if image is not None and image_encoder is not None:
            if isinstance(image, str):  # the whole image, as upstream gives it to CLIP's own resize / crop
                image = read_image(image)
            pixels = feature_extractor(images=image, return_tensors="pt").pixel_values
            embeds = image_encoder(pixels.to(device, image_encoder.dtype)).image_embeds.float()
            self.embeds = embeds.expand(batch, -1)

    def inputs(self, step: int, steps: int, guided: bool) -> dict[str, torch.Tensor]:
        on = self.embeds is not None and step >= steps * (1 - self.apply_ratio)
        embeds, mask = (self.embeds, torch.ones_like(self.zero_mask)) if on else (self.zeros, self.zero_mask)
        if guided:
            embeds, mask = torch.cat([self.zeros, embeds]), torch.cat([self.zero_mask, mask])
        return {"clip_encoder_hidden_states": embeds, "clip_attention_mask": mask}
