"""Upstream EasyAnimate's V2 / V3 VAE (its own `AutoencoderKLMagvit`, not diffusers'), loaded from its folders.

Its maths differs from our `SliceVAE` in ways that change every output, so it is its own class:

- GroupNorm over (C, T, H, W) of each call, so results depend on how a video is cut into calls;
- a 3D self-attention (one head over all T x H x W positions) between the two mid-block residual blocks;
- causal 3D convs padded by one of three rules: `CAUSAL` (V2: the first frame repeated twice in front),
  `FIRST` / `SLICE` (V3: one zero frame on each side);
- temporal upsampling by trilinear interpolation: `CAUSAL` keeps the first frame and doubles the rest,
  `SLICE` doubles all, `FIRST` (a lone first latent) none.

V2 (`slice_compression_vae: false`) encodes independent 9-frame chunks into 3 latents each and decodes
independent 3-latent chunks (frames: 1 or 9k). V3 (`true`) encodes a lone first frame when the count is odd,
then independent 8-frame slices; its decoder gives the first latent alone and then 2-latent slices whose
`conv_in` and mid block also see the neighbouring slices (frames: 8k or 1 + 8k). The pipeline's optional seam
smoothing (`smooth_seams`) re-encodes the frames around every slice border and averages, as upstream does.
"""

from __future__ import annotations

import ast
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from .devices import execution_device
from .local import read_local_config
from .pixart_weights import read_weights
from .shape_rule import ShapeRule

CAUSAL, FIRST, SLICE = "causal", "first", "slice"  # the padding / upsampling rule of one call
DOWN_BLOCKS = {"SpatialDownBlock3D": (True, False), "SpatialTemporalDownBlock3D": (True, True)}
UP_BLOCKS = {"SpatialUpBlock3D": (True, False), "SpatialTemporalUpBlock3D": (True, True)}
# keys that only upstream's VAE config has (ours and diffusers' use block_out_channels)
UPSTREAM_VAE_KEYS = (
    "ch",
    "ch_mult",
    "slice_compression_vae",
    "mini_batch_encoder",
    "mid_block_use_attention",
)


class CausalConv3d(nn.Conv3d):
    """3x3x3 conv, spatially padded by 1 (or 0 where a spatial downsampler pads itself), temporally padded
    by the call's rule."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int] = (1, 1, 1), spatial_pad: int = 1):
        super().__init__(cin, cout, kernel_size=3, stride=stride, padding=(0, spatial_pad, spatial_pad))

    def forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == CAUSAL:
            x = F.pad(x, (0, 0, 0, 0, 2, 0), mode="replicate")
        else:
            x = F.pad(x, (0, 0, 0, 0, 1, 1))
        return super().forward(x)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = CausalConv3d(cin, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = CausalConv3d(cout, cout)
        self.shortcut = nn.Conv3d(cin, cout, kernel_size=1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), mode)
        h = self.conv2(F.silu(self.norm2(h)), mode)
        return h + self.shortcut(x)


class Attention3D(nn.Module):
    """Self-attention over every (t, h, w) position of the call, GroupNorm first, residual added."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.group_norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tokens = self.group_norm(x.reshape(b, c, t * h * w)).transpose(1, 2)

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, -1, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.to_q(tokens)), heads(self.to_k(tokens)), heads(self.to_v(tokens))
        )
        out = self.to_out(out.transpose(1, 2).reshape(b, -1, c))
        return x + out.transpose(1, 2).reshape(b, c, t, h, w)


class MidBlock(nn.Module):
    def __init__(self, channels: int, layers: int, groups: int, heads: int, attention: bool):
        super().__init__()
        self.convs = nn.ModuleList(ResBlock(channels, channels, groups) for _ in range(layers))
        self.attentions = nn.ModuleList(
            Attention3D(channels, heads, groups) if attention else nn.Identity() for _ in range(layers - 1)
        )

    def forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        x = self.convs[0](x, mode)
        for attn, conv in zip(self.attentions, self.convs[1:]):
            x = conv(attn(x), mode)
        return x


class Downsampler(nn.Module):
    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, stride=(2 if temporal else 1, 2, 2), spatial_pad=0)

    def forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)), mode)  # right / bottom only, as upstream


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, downsample: bool, temporal: bool):
        super().__init__()
        self.convs = nn.ModuleList(ResBlock(cin if i == 0 else cout, cout, groups) for i in range(layers))
        self.downsampler = Downsampler(cout, temporal) if downsample else None

    def forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x, mode)
        return self.downsampler(x, mode) if self.downsampler is not None else x


class Upsampler(nn.Module):
    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(channels, channels)

    def forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        x = self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"), mode)
        if not self.temporal or mode == FIRST:
            return x
        if mode == SLICE:
            return F.interpolate(x, scale_factor=(2, 1, 1), mode="trilinear")
        if x.shape[2] == 1:
            return x
        rest = F.interpolate(x[:, :, 1:], scale_factor=(2, 1, 1), mode="trilinear")
        return torch.cat([x[:, :, :1], rest], dim=2)


class UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, upsample: bool, temporal: bool):
        super().__init__()
        self.convs = nn.ModuleList(ResBlock(cin if i == 0 else cout, cout, groups) for i in range(layers))
        # upstream sizes a spatial-only upsampler by the block's input channels, a spatio-temporal one by its output
        self.upsampler = Upsampler(cout if temporal else cin, temporal) if upsample else None

    def forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x, mode)
        return self.upsampler(x, mode) if self.upsampler is not None else x


def _block_kind(table: dict[str, tuple[bool, bool]], name: str) -> tuple[bool, bool]:
    if name not in table:
        raise ValueError(f"upstream VAE block type {name!r} is not supported (supported: {sorted(table)})")
    return table[name]


class Encoder(nn.Module):
    def __init__(self, cin, latent, channels, block_types, layers, groups, heads, attention):
        super().__init__()
        self.conv_in = CausalConv3d(cin, channels[0])
        self.down_blocks = nn.ModuleList()
        prev = channels[0]
        for i, name in enumerate(block_types):
            _, temporal = _block_kind(DOWN_BLOCKS, name)
            last = i == len(block_types) - 1
            self.down_blocks.append(DownBlock(prev, channels[i], layers, groups, not last, temporal))
            prev = channels[i]
        self.mid_block = MidBlock(channels[-1], layers, groups, heads, attention)
        self.conv_norm_out = nn.GroupNorm(groups, channels[-1], eps=1e-6)
        self.conv_out = CausalConv3d(channels[-1], 2 * latent)

    def forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        x = self.conv_in(x, mode)
        for block in self.down_blocks:
            x = block(x, mode)
        x = self.mid_block(x, mode)
        return self.conv_out(F.silu(self.conv_norm_out(x)), mode)


class Decoder(nn.Module):
    def __init__(self, latent, cout, channels, block_types, layers, groups, heads, attention):
        super().__init__()
        rev = list(reversed(channels))
        self.conv_in = CausalConv3d(latent, rev[0])
        self.mid_block = MidBlock(rev[0], layers, groups, heads, attention)
        self.up_blocks = nn.ModuleList()
        prev = rev[0]
        for i, name in enumerate(block_types):
            _, temporal = _block_kind(UP_BLOCKS, name)
            last = i == len(block_types) - 1
            self.up_blocks.append(UpBlock(prev, rev[i], layers + 1, groups, not last, temporal))
            prev = rev[i]
        self.conv_norm_out = nn.GroupNorm(groups, channels[0], eps=1e-6)
        self.conv_out = CausalConv3d(channels[0], cout)

    def stem(
        self,
        x: torch.Tensor,
        mode: str,
        before: torch.Tensor | None = None,
        after: torch.Tensor | None = None,
    ):
        """`conv_in` and the mid block, seeing the neighbouring latents when given; only `x`'s part is kept."""
        parts = [p for p in (before, x, after) if p is not None]
        h = self.mid_block(self.conv_in(torch.cat(parts, dim=2), mode), mode)
        start = 0 if before is None else before.shape[2]
        return h[:, :, start : start + x.shape[2]]

    def forward(self, x: torch.Tensor, mode: str, before=None, after=None) -> torch.Tensor:
        x = self.stem(x, mode, before, after)
        for block in self.up_blocks:
            x = block(x, mode)
        return self.conv_out(F.silu(self.conv_norm_out(x)), mode)


def _as_list(value: Any) -> list[str]:
    """Upstream writes its block lists as Python tuple strings: "('SpatialDownBlock3D', ...)"."""
    return list(ast.literal_eval(value)) if isinstance(value, str) else list(value)


class UpstreamMagvitVAE(ModelMixin, ConfigMixin):
    """Upstream's V2 / V3 VAE with upstream's config keys; `encode(x).latent_dist` / `decode(z).sample` run one
    call as upstream's module does, `encode_latents` / `decode_latents` the way upstream's pipeline cuts a video."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ch: int = 128,
        ch_mult: tuple[int, ...] = (1, 2, 4, 4),
        use_gc_blocks: Any = None,
        down_block_types: Any = None,
        up_block_types: Any = None,
        mid_block_type: str = "MidBlock3D",
        mid_block_use_attention: bool = True,
        mid_block_attention_type: str = "3d",
        mid_block_num_attention_heads: int = 1,
        layers_per_block: int = 2,
        act_fn: str = "silu",
        num_attention_heads: int = 1,
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        scaling_factor: float = 0.1825,
        slice_compression_vae: bool = False,
        use_tiling: bool = False,
        mini_batch_encoder: int = 9,
        mini_batch_decoder: int = 3,
    ):
        super().__init__()
        unsupported = {
            "use_gc_blocks": use_gc_blocks if use_gc_blocks and any(use_gc_blocks) else None,
            "mid_block_type": None if mid_block_type == "MidBlock3D" else mid_block_type,
            "mid_block_attention_type": None
            if mid_block_attention_type == "3d"
            else mid_block_attention_type,
            "act_fn": None if act_fn == "silu" else act_fn,
            "use_tiling": use_tiling or None,
        }
        bad = {k: v for k, v in unsupported.items() if v is not None}
        if bad:
            raise ValueError(f"upstream VAE config values not supported: {bad}")
        channels = [ch * m for m in ch_mult]
        down, up = _as_list(down_block_types), _as_list(up_block_types)
        if len(down) != len(channels) or len(up) != len(channels):
            raise ValueError(
                f"upstream VAE config: {len(channels)} ch_mult entries but {len(down)} / {len(up)} block types"
            )
        args = (
            channels,
            layers_per_block,
            norm_num_groups,
            mid_block_num_attention_heads,
            mid_block_use_attention,
        )
        self.encoder = Encoder(in_channels, latent_channels, args[0], down, *args[1:])
        self.decoder = Decoder(latent_channels, out_channels, args[0], up, *args[1:])
        self.quant_conv = nn.Conv3d(2 * latent_channels, 2 * latent_channels, kernel_size=1)
        self.post_quant_conv = nn.Conv3d(latent_channels, latent_channels, kernel_size=1)
        self.frame_rule = config_shape_rule(self.config)  # frames / sizes this VAE takes (config-derived)
        self.spatial_compression_ratio = self.frame_rule.size_multiple
        self.temporal_compression_ratio = self.frame_rule.temporal_ratio
        self.smooth_seams = False  # upstream's extra decode pass over the slice borders (`smooth`)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> UpstreamMagvitVAE:
        """A local upstream V2 / V3 VAE folder (config.json + weights), loaded strictly: a missing or extra
        tensor is an error naming it (diffusers would leave it random and warn)."""
        folder, config = read_local_config(pretrained_model_name_or_path, kwargs.get("subfolder"), "VAE")
        if not is_upstream_vae_config(config):
            raise ValueError(
                f"{folder} is not upstream EasyAnimate's V2 / V3 VAE (its config has none of {UPSTREAM_VAE_KEYS})"
            )
        model = cls.from_config(config)
        result = model.load_state_dict(read_weights(folder), strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{folder}: VAE weights do not fit its config: missing {result.missing_keys[:8]}, "
                f"unexpected {result.unexpected_keys[:8]}"
            )
        dtype = kwargs.get("torch_dtype") or kwargs.get("dtype")
        return model.to(dtype).eval() if dtype is not None else model.eval()

    # ---------------------------------------------------------------------------------------------- rules

    @property
    def shape_rule(self) -> ShapeRule:
        return self.frame_rule

    def latent_frames(self, num_frames: int) -> int:
        self.frame_rule.check_frames(num_frames)
        return self.frame_rule.latent_frames(num_frames)

    # ---------------------------------------------------------------------------------------------- one call

    def _encoder_call(self, x: torch.Tensor) -> torch.Tensor:
        """Upstream's `Encoder.forward`: V3 cuts the call into a lone first frame and independent slices."""
        if not self.config.slice_compression_vae:
            return self.encoder(x, CAUSAL)
        parts, start = [], 0
        if x.shape[2] % 2:
            parts.append(self.encoder(x[:, :, :1], FIRST))
            start = 1
        n = self.config.mini_batch_encoder
        for i in range(start, x.shape[2], n):
            parts.append(self.encoder(x[:, :, i : i + n], SLICE))
        return torch.cat(parts, dim=2)

    def _decoder_call(self, z: torch.Tensor) -> torch.Tensor:
        """Upstream's `Decoder.forward`: V3 decodes a lone first latent, then slices that see their neighbours."""
        if not self.config.slice_compression_vae:
            return self.decoder(z, CAUSAL)
        parts, start = [], 0
        if z.shape[2] % 2:
            parts.append(self.decoder(z[:, :, :1], FIRST))
            start = 1
        n = self.config.mini_batch_decoder
        for i in range(start, z.shape[2], n):
            before = z[:, :, i - n : i] if i > start else None
            after = z[:, :, i + n : i + 2 * n] if i + n < z.shape[2] else None
            parts.append(self.decoder(z[:, :, i : i + n], SLICE, before, after))
        return torch.cat(parts, dim=2)

    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """One upstream encoder call on `(B, 3, F, H, W)` in [-1, 1]."""
        posterior = DiagonalGaussianDistribution(self.quant_conv(self._encoder_call(x)))
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    @apply_forward_hook
    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """One upstream decoder call on latents `(B, C, f, h, w)` (unscaled)."""
        dec = self._decoder_call(self.post_quant_conv(z))
        return DecoderOutput(sample=dec) if return_dict else (dec,)

    # ---------------------------------------------------------------------------------------------- pipeline

    def _moments(self, x: torch.Tensor) -> torch.Tensor:
        """Moments of a whole video: one call (V3) or independent mini-batch chunks (V2), as upstream's pipeline."""
        if self.config.slice_compression_vae:
            return self.encode(x).latent_dist.parameters
        n = self.config.mini_batch_encoder
        return torch.cat(
            [self.encode(x[:, :, i : i + n]).latent_dist.parameters for i in range(0, x.shape[2], n)], 2
        )

    def _frames(self, z: torch.Tensor) -> torch.Tensor:
        if self.config.slice_compression_vae:
            return self.decode(z).sample
        n = self.config.mini_batch_decoder
        return torch.cat([self.decode(z[:, :, i : i + n]).sample for i in range(0, z.shape[2], n)], 2)

    def encode_latents(
        self, pixels: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False
    ) -> torch.Tensor:
        """Pixels `(B, 3, F, H, W)` in [-1, 1] (F valid for `frame_rule`) -> scaled latents."""
        pixels = pixels.to(execution_device(self), self.dtype)
        self.frame_rule.check_frames(pixels.shape[2], "frames")
        posterior = DiagonalGaussianDistribution(torch.cat([self._moments(p) for p in pixels.split(1)]))
        z = posterior.sample(generator=generator) if sample else posterior.mode()
        return z * self.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> pixels `(B, 3, F, H, W)` in about [-1, 1]; with `smooth_seams`, upstream's second
        pass: the frames from half a mini-batch in to half a mini-batch before the end are re-encoded, decoded
        and averaged with the first decode (the posterior's mode here, where upstream draws a sample)."""
        z = (latents / self.config.scaling_factor).to(execution_device(self), self.dtype)
        video = torch.cat([self._frames(zi) for zi in z.split(1)])
        n = self.config.mini_batch_encoder
        if not self.smooth_seams or video.shape[2] <= n:
            return video
        video = video.clamp(-1, 1)
        lo, hi = n // 2, video.shape[2] - (n - n // 2)
        middle = torch.cat(
            [
                self._frames(DiagonalGaussianDistribution(self._moments(v)).mode())
                for v in video[:, :, lo:hi].split(1)
            ]
        )
        video[:, :, lo:hi] = (video[:, :, lo:hi] + middle) / 2
        return video.clamp(-1, 1)


def is_upstream_vae_config(config: dict[str, Any]) -> bool:
    return any(k in config for k in UPSTREAM_VAE_KEYS)


def config_shape_rule(config: dict[str, Any]) -> ShapeRule:
    """The frame / size rule of an upstream VAE config, without building it: 8x spatial; V2 chunks of
    `mini_batch_encoder` frames -> `mini_batch_decoder` latents (1 or 9k frames), V3 slices of
    `mini_batch_encoder` frames at 4x after a lone first frame (8k or 1 + 8k)."""
    down = _as_list(config.get("down_block_types") or ())
    kinds = [_block_kind(DOWN_BLOCKS, n) for n in down[:-1]]
    spatial = 2 ** sum(s for s, _ in kinds)
    encoder_frames = int(config.get("mini_batch_encoder", 9))
    if config.get("slice_compression_vae"):
        return ShapeRule(2 ** sum(t for _, t in kinds), spatial, frame_block=encoder_frames, lone_first=True)
    ratio = encoder_frames // int(config.get("mini_batch_decoder", 3))
    return ShapeRule(ratio, spatial, frame_block=encoder_frames)
