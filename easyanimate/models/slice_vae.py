"""Slice VAE: EasyAnimate's causal 3D VAE, encoding and decoding long videos slice by slice.

The architecture is diffusers' `AutoencoderKLMagvit` (causal 3D convs that carry a feature cache from one
temporal slice to the next); this class owns the slicing policy and its guarantees:

- frame rule: `1 + 4k` frames <-> `1 + k` latent frames (an image is a 1-frame video);
- the result does not depend on the slice sizes (they are run-time settings), because the causal cache
  makes slices see exactly what one long call would see. Upstream's `spatial_group_norm=False` breaks this
  (GroupNorm statistics over all frames of a slice, trilinear temporal upsampling inside a slice); this class
  always normalises per frame, so any checkpoint decodes the same whatever the slice size;
- outputs are preallocated and filled slice by slice, so peak memory beyond the output is one slice's;
- optional spatial tiling with linearly blended overlaps, and batch slicing (one sample at a time).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders import AutoencoderKLMagvit
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' pipeline loader looks it up here)
from diffusers.utils.accelerate_utils import apply_forward_hook
from diffusers.utils.torch_utils import randn_tensor

from .devices import execution_device
from .local import read_local_config
from .shape_rule import ShapeRule, nearest_valid_frames
from .upstream_vae import UPSTREAM_VAE_KEYS

DEFAULT_DECODE_SLICE_LATENTS = 2  # latent frames per decoder call (the memory estimator assumes it too)

logger = logging.getLogger(__name__)

_DOWN = [
    "SpatialDownBlock3D",
    "SpatialTemporalDownBlock3D",
    "SpatialTemporalDownBlock3D",
    "SpatialTemporalDownBlock3D",
]
_UP = ["SpatialUpBlock3D", "SpatialTemporalUpBlock3D", "SpatialTemporalUpBlock3D", "SpatialTemporalUpBlock3D"]

VAE_PRESETS: dict[str, dict[str, Any]] = {
    # EasyAnimate v5: 16 latent channels
    "magvit-16ch": dict(latent_channels=16, block_out_channels=[128, 256, 512, 512], scaling_factor=0.7125),
    # EasyAnimate v2/v3: 4 latent channels, the channel count PixArt-alpha's DiT expects
    "slice-4ch": dict(latent_channels=4, block_out_channels=[128, 256, 512, 512], scaling_factor=0.18215),
    # tests
    "tiny": dict(
        latent_channels=4,
        block_out_channels=[16, 32, 32, 32],
        layers_per_block=1,
        norm_num_groups=4,
        scaling_factor=1.0,
    ),
    # the CPU demo: three blocks, so 4x spatial / 2x temporal. At 64 px an 8x VAE leaves 8x8 latents where a
    # shape covers about two cells; measured on 2 cores, this one reconstructs the shapes' colour and kind
    # after 800 steps better than the 8x tiny one after 3,300 (ARCHITECTURE.md, "demo model").
    "demo": dict(
        latent_channels=4,
        block_out_channels=[16, 32, 32],
        down_block_types=_DOWN[:3],
        up_block_types=_UP[:3],
        layers_per_block=1,
        norm_num_groups=4,
        scaling_factor=1.0,
    ),
}


def _ramp(length: int, overlap: int, start: bool, end: bool) -> torch.Tensor:
    """1-D blend weights: a linear ramp over `overlap` at the sides that meet another tile."""
    w = torch.ones(length)
    n = min(overlap, length)
    if n > 0:
        ramp = (torch.arange(n, dtype=torch.float32) + 1) / (n + 1)
        if start:
            w[:n] = torch.minimum(w[:n], ramp)
        if end:
            w[-n:] = torch.minimum(w[-n:], ramp.flip(0))
    return w


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]  # the last tile is flush with the edge


class SliceVAE(AutoencoderKLMagvit):
    """`AutoencoderKLMagvit` with our slicing policy; loads v5-style Magvit folders as they are."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 16,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
        down_block_types: tuple[str, ...] = tuple(_DOWN),
        up_block_types: tuple[str, ...] = tuple(_UP),
        layers_per_block: int = 2,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        scaling_factor: float = 0.7125,
        spatial_group_norm: bool = True,
    ):
        if not spatial_group_norm:
            logger.warning(
                "SliceVAE normalises per frame (spatial_group_norm=True) so that slicing is exact; "
                "this checkpoint was configured with spatial_group_norm=False"
            )
        super().__init__(
            in_channels=in_channels,
            latent_channels=latent_channels,
            out_channels=out_channels,
            block_out_channels=list(block_out_channels),
            down_block_types=list(down_block_types),
            up_block_types=list(up_block_types),
            layers_per_block=layers_per_block,
            act_fn=act_fn,
            norm_num_groups=norm_num_groups,
            scaling_factor=scaling_factor,
            spatial_group_norm=True,
        )
        self.encode_slice_frames = 8  # video frames per encoder call (multiple of the temporal ratio)
        self.decode_slice_latents = DEFAULT_DECODE_SLICE_LATENTS  # latent frames per decoder call
        self.tile_sample_size = 256  # pixels; tiling applies to frames larger than this
        self.tile_sample_overlap = 64
        self.allow_trim = False
        self._slice_checkpointing = False
        # modules holding the causal cache between slices (convs and temporal upsamplers)
        self._cache_modules = [m for m in self.modules() if hasattr(m, "prev_features")]

    # ---------------------------------------------------------------------------------------------- settings

    def set_slicing(self, encode_frames: int | None = None, decode_latents: int | None = None) -> None:
        """Temporal slice sizes; results do not depend on them, peak memory does."""
        r = self.temporal_compression_ratio
        if encode_frames is not None:
            if encode_frames < r or encode_frames % r:
                raise ValueError(
                    f"encode slice must be a positive multiple of {r} frames, got {encode_frames}"
                )
            self.encode_slice_frames = encode_frames
        if decode_latents is not None:
            if decode_latents < 1:
                raise ValueError(f"decode slice must be >= 1 latent frame, got {decode_latents}")
            self.decode_slice_latents = decode_latents

    def enable_tiling(self, tile_sample_size: int = 256, tile_sample_overlap: int = 64) -> None:  # type: ignore[override]
        """Spatial tiles of `tile_sample_size` pixels overlapping by `tile_sample_overlap`, blended linearly."""
        s = self.spatial_compression_ratio
        if tile_sample_size % s or tile_sample_overlap % s or not 0 <= tile_sample_overlap < tile_sample_size:
            raise ValueError(f"tile size and overlap must be multiples of {s} with overlap < size")
        self.use_tiling = True
        self.tile_sample_size = tile_sample_size
        self.tile_sample_overlap = tile_sample_overlap

    def enable_gradient_checkpointing(self, gradient_checkpointing_func=None) -> None:
        """Recompute each slice in backward instead of storing its activations.

        Upstream's block-level checkpointing fails here: recomputation runs after the causal cache has moved
        on (torch raises CheckpointError). We checkpoint whole slices and pass the cache in and out as
        tensors, so the recomputed slice sees exactly the cache it saw in the forward pass.
        """
        self._slice_checkpointing = True

    def disable_gradient_checkpointing(self) -> None:
        self._slice_checkpointing = False

    def _run_slice(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not (self._slice_checkpointing and torch.is_grad_enabled()):
            return module(x)
        mods = self._cache_modules

        def step(x, *caches):
            for m, c in zip(mods, caches):
                m.prev_features = c
            out = module(x)
            new = tuple(m.prev_features for m in mods)
            for m in mods:  # the caller installs the new cache; a recomputation leaves nothing behind
                m.prev_features = None
            return (out, *new)

        out, *new = torch.utils.checkpoint.checkpoint(
            step, x, *(m.prev_features for m in mods), use_reentrant=False
        )
        for m, c in zip(mods, new):
            m.prev_features = c
        return out

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """A SliceVAE / AutoencoderKLMagvit folder (local: nothing is downloaded). Upstream EasyAnimate's V2 / V3
        VAE folders are refused by name: this class would drop their mid-block attention and decode something
        else (`load_vae` loads them as `UpstreamMagvitVAE`)."""
        folder, config = read_local_config(pretrained_model_name_or_path, kwargs.get("subfolder"), "VAE")
        upstream = [k for k in UPSTREAM_VAE_KEYS if k in config]
        if upstream:
            raise ValueError(
                f"{folder} is upstream EasyAnimate's V2 / V3 VAE (config has {', '.join(upstream)}): load it with "
                "easyanimate.models.load_vae (UpstreamMagvitVAE), not as a SliceVAE"
            )
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for `num_frames` video frames; clear error for counts off the 1 + 4k rule."""
        r = self.temporal_compression_ratio
        if num_frames >= 1 and (num_frames - 1) % r == 0:
            return 1 + (num_frames - 1) // r
        below, above = nearest_valid_frames(num_frames, r)
        raise ValueError(
            f"{num_frames} frames do not fit the VAE's 1 + {r}k rule; nearest valid counts: {below} or {above} "
            f"(or set vae.allow_trim = True to drop the trailing frames)"
        )

    def video_frames(self, num_latent_frames: int) -> int:
        return 1 + self.temporal_compression_ratio * (num_latent_frames - 1)

    @property
    def shape_rule(self) -> ShapeRule:
        """Frames `1 + rk`, sizes multiples of the spatial ratio (see `shape_rule.py`)."""
        return ShapeRule.of(self)

    # ---------------------------------------------------------------------------------------------- latents

    def encode_latents(
        self, pixels: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False
    ) -> torch.Tensor:
        """Pixels `(B, 3, F, H, W)` in [-1, 1] -> scaled latents (what a DiT denoises): the posterior's mode, or
        a sample drawn with `generator`. Inputs are moved to the VAE's device and dtype."""
        # where the VAE computes, also while offload hooks keep its weights elsewhere until the call
        posterior = self.encode(pixels.to(execution_device(self), self.dtype)).latent_dist
        z = posterior.sample(generator=generator) if sample else posterior.mode()
        return z * self.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> pixels `(B, 3, F, H, W)` in about [-1, 1] (not clamped), in the VAE's dtype."""
        latents = (latents / self.config.scaling_factor).to(execution_device(self), self.dtype)
        return self.decode(latents).sample

    # ---------------------------------------------------------------------------------------------- encode

    def _check_frames(self, x: torch.Tensor) -> torch.Tensor:
        f = x.shape[2]
        r = self.temporal_compression_ratio
        if self.allow_trim and f >= 1 and (f - 1) % r:
            return x[:, :, : nearest_valid_frames(f, r)[0]]
        self.latent_frames(f)
        return x

    def _encode_slices(self, x: torch.Tensor) -> torch.Tensor:
        """Moments (B, 2*latent, 1 + k, h, w) of one spatial tile, slice by slice through the causal cache."""
        b, _, f, h, w = x.shape
        s = self.spatial_compression_ratio
        out = x.new_empty(b, 2 * self.config.latent_channels, self.latent_frames(f), h // s, w // s)
        self._clear_conv_cache()
        try:
            out[:, :, :1] = self.quant_conv(
                self._run_slice(self.encoder, x[:, :, :1])
            )  # the first frame stands alone
            pos = 1
            for i in range(1, f, self.encode_slice_frames):
                moments = self.quant_conv(
                    self._run_slice(self.encoder, x[:, :, i : i + self.encode_slice_frames])
                )
                out[:, :, pos : pos + moments.shape[2]] = moments
                pos += moments.shape[2]
        finally:
            self._clear_conv_cache()
        return out

    def _encode(self, x: torch.Tensor, return_dict: bool = True) -> torch.Tensor:
        x = self._check_frames(x)
        if self.use_tiling and max(x.shape[-2:]) > self.tile_sample_size:
            return self._tiled(x, self._encode_slices, 1 / self.spatial_compression_ratio)
        return self._encode_slices(x)

    @apply_forward_hook  # lets accelerate's CPU-offload hooks move the VAE in for this call
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """Encode `(B, 3, 1 + 4k, H, W)` in [-1, 1] (or `(B, 3, H, W)` images) to a latent distribution."""
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if self.use_slicing and x.shape[0] > 1:
            h = torch.cat([self._encode(xi) for xi in x.split(1)])
        else:
            h = self._encode(x)
        posterior = DiagonalGaussianDistribution(h)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    # ---------------------------------------------------------------------------------------------- decode

    def _decode_slices(self, z: torch.Tensor) -> torch.Tensor:
        b, _, f, h, w = z.shape
        s = self.spatial_compression_ratio
        out = z.new_empty(b, self.config.out_channels, self.video_frames(f), h * s, w * s)
        self._clear_conv_cache()
        try:
            out[:, :, :1] = self._run_slice(self.decoder, self.post_quant_conv(z[:, :, :1]))
            pos = 1
            for i in range(1, f, self.decode_slice_latents):
                frames = self._run_slice(
                    self.decoder, self.post_quant_conv(z[:, :, i : i + self.decode_slice_latents])
                )
                out[:, :, pos : pos + frames.shape[2]] = frames
                pos += frames.shape[2]
        finally:
            self._clear_conv_cache()
        return out

    def _decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | torch.Tensor:
        tile_latent = self.tile_sample_size // self.spatial_compression_ratio
        if self.use_tiling and max(z.shape[-2:]) > tile_latent:
            dec = self._tiled(z, self._decode_slices, self.spatial_compression_ratio)
        else:
            dec = self._decode_slices(z)
        return DecoderOutput(sample=dec) if return_dict else (dec,)

    @apply_forward_hook
    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """Decode latents `(B, C, 1 + k, h, w)` to video `(B, 3, 1 + 4k, 8h, 8w)`."""
        if self.use_slicing and z.shape[0] > 1:
            dec = torch.cat([self._decode(zi).sample for zi in z.split(1)])
        else:
            dec = self._decode(z).sample
        return DecoderOutput(sample=dec) if return_dict else (dec,)

    # ---------------------------------------------------------------------------------------------- tiling

    def _tiled(self, x: torch.Tensor, fn, scale: float) -> torch.Tensor:
        """Apply `fn` to overlapping spatial tiles of `x` and blend the results with linear ramps.

        `scale` maps input pixels to output pixels (8 for decoding, 1/8 for encoding); tile size and
        overlap are given in sample (pixel) space.
        """
        s = self.spatial_compression_ratio
        if scale > 1:  # decoding: latent-space tiles
            tile, overlap = self.tile_sample_size // s, self.tile_sample_overlap // s
        else:
            tile, overlap = self.tile_sample_size, self.tile_sample_overlap
        stride = tile - overlap
        h, w = x.shape[-2:]
        rows, cols = _tile_starts(h, tile, stride), _tile_starts(w, tile, stride)
        out = weight = None
        for i in rows:
            for j in cols:
                y = fn(x[..., i : i + tile, j : j + tile])
                if out is None:
                    out_h, out_w = round(h * scale), round(w * scale)
                    out = y.new_zeros(*y.shape[:-2], out_h, out_w)
                    weight = y.new_zeros(out_h, out_w)
                oi, oj = round(i * scale), round(j * scale)
                th, tw = y.shape[-2:]
                o = round(overlap * scale)
                wy = _ramp(th, o, i > 0, i != rows[-1]).to(y)
                wx = _ramp(tw, o, j > 0, j != cols[-1]).to(y)
                wt = wy[:, None] * wx[None, :]
                out[..., oi : oi + th, oj : oj + tw] += y * wt
                weight[oi : oi + th, oj : oj + tw] += wt
        return out / weight


def build_vae(name: str, **overrides: Any) -> SliceVAE:
    """A randomly initialised Slice VAE from a preset name (`VAE_PRESETS`)."""
    if name not in VAE_PRESETS:
        raise ValueError(f"unknown VAE preset {name!r}; choose from {sorted(VAE_PRESETS)}")
    return SliceVAE(**{**VAE_PRESETS[name], **overrides})


def config_shape_rule(config: dict[str, Any]) -> ShapeRule:
    """The frame / size rule of a VAE with this config (AutoencoderKLMagvit: 2^(blocks-1) spatial, 2^(blocks-2)
    temporal), without building it."""
    blocks = len(config.get("block_out_channels", (128, 256, 512, 512)))
    return ShapeRule(temporal_ratio=2 ** (blocks - 2), size_multiple=2 ** (blocks - 1))


def preset_shape_rule(name: str) -> ShapeRule | None:
    """The frame / size rule a preset will have (None for names that are not presets)."""
    return config_shape_rule(VAE_PRESETS[name]) if name in VAE_PRESETS else None


def scaled_posterior_sample(
    vae: SliceVAE, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Scaled latents sampled from a stored posterior (a latent cache), drawn exactly as the VAE's own
    `encode_latents(..., sample=True)` draws them."""
    noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return (mean + std * noise) * vae.config.scaling_factor
