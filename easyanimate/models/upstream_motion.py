"""EasyAnimate v1-v3's motion module, as upstream computes it, in our own code and names.

Where it differs from our `MotionModule` (each changes the numbers, so released weights need it):
- it runs inside a PixArt block, after self-attention and before cross-attention (the transformer places it);
- its input is GroupNorm'd per frame over channels x height x width (32 groups), then projected;
- each attention layer chooses its own tokens: "temporal" (each spatial token, or each `grid x grid` tile,
  attends across frames) or "global" (all frames x tokens); q/k/v have no bias; heads are the module's own;
- the temporal code is sin on even channels, cos on odd ones (frequency 10000^(-2i/C)), indexed by frame and
  added to each attention layer's normed input;
- it runs for one frame too (attention over one token is not an identity).

`UPSTREAM_KEYS` maps upstream's parameter names (`temporal_transformer...`) onto ours.
"""

from __future__ import annotations

import math
import re

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

ATTENTION_KINDS = ("temporal", "global")


def frame_code(num_frames: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """`(F, dim)`: sin(f * w_i) on channel 2i, cos(f * w_i) on channel 2i + 1, w_i = 10000^(-2i/dim)."""
    position = torch.arange(num_frames, device=device).unsqueeze(1)
    rates = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    code = torch.zeros(num_frames, dim, device=device)
    code[:, 0::2] = torch.sin(position * rates)
    code[:, 1::2] = torch.cos(position * rates)
    return code.to(dtype)


class UpstreamAttentionLayer(nn.Module):
    """LayerNorm, the frame code, then self-attention over this layer's kind of token groups."""

    def __init__(self, dim: int, heads: int, kind: str, grid: int = 1):
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"attention kind must be one of {ATTENTION_KINDS}, got {kind!r}")
        self.kind, self.grid = kind, grid
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(
            query_dim=dim, heads=heads, dim_head=dim // heads, bias=False, processor=AttnProcessor2_0()
        )

    def forward(self, x: torch.Tensor, b: int, f: int, h: int, w: int) -> torch.Tensor:
        """`x` `(B*F, h*w, D)` -> the attention output, same shape (the caller adds the residual)."""
        d = x.shape[-1]
        y = self.norm(x).view(b, f, h * w, d) + frame_code(f, d, x.device, x.dtype)[None, :, None]
        g = self.grid
        if self.kind == "global":
            return self.attn(y.reshape(b, f * h * w, d)).reshape(b * f, h * w, d)
        if g == 1:
            seq = y.transpose(1, 2).reshape(b * h * w, f, d)
            return self.attn(seq).view(b, h * w, f, d).transpose(1, 2).reshape(b * f, h * w, d)
        if h % g or w % g:
            raise ValueError(f"grid motion modules need the token grid ({h}x{w}) divisible by {g}")
        tiles = y.view(b, f, h // g, g, w // g, g, d).permute(0, 2, 4, 1, 3, 5, 6)
        out = self.attn(tiles.reshape(b * (h // g) * (w // g), f * g * g, d))
        out = out.view(b, h // g, w // g, f, g, g, d).permute(0, 3, 1, 4, 2, 5, 6)
        return out.reshape(b * f, h * w, d)


class UpstreamMotionModule(nn.Module):
    """One block's motion module: GroupNorm + projection in, attention layers, GEGLU feed-forward, projection out
    (zero-initialised) added to the input."""

    def __init__(self, dim: int, heads: int, kinds: list[str], grid: int = 1, norm_groups: int = 32):
        super().__init__()
        if dim % heads:
            raise ValueError(f"motion module width {dim} is not divisible by its {heads} heads")
        self.norm = nn.GroupNorm(norm_groups, dim, eps=1e-6)
        self.proj_in = nn.Linear(dim, dim)
        self.layers = nn.ModuleList(UpstreamAttentionLayer(dim, heads, kind, grid) for kind in kinds)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.proj_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, b: int, f: int, h: int, w: int) -> torch.Tensor:
        """`x` `(B*F, h*w, D)`, frames in the batch -> the same shape."""
        d = x.shape[-1]
        y = self.norm(x.transpose(1, 2).reshape(b * f, d, h, w)).reshape(b * f, d, h * w).transpose(1, 2)
        y = self.proj_in(y)
        for layer in self.layers:
            y = layer(y, b, f, h, w) + y
        y = self.ff(self.ff_norm(y)) + y
        return x + self.proj_out(y)


# upstream name (inside `transformer_blocks.N.attn_temporal.`) -> ours (inside `motion_modules.N.`)
UPSTREAM_KEYS = [
    (r"^temporal_transformer\.norm\.", "norm."),
    (r"^temporal_transformer\.proj_in\.", "proj_in."),
    (r"^temporal_transformer\.proj_out\.", "proj_out."),
    (r"^temporal_transformer\.transformer_blocks\.0\.attention_blocks\.(\d+)\.", r"layers.\1.attn."),
    (r"^temporal_transformer\.transformer_blocks\.0\.norms\.(\d+)\.", r"layers.\1.norm."),
    (r"^temporal_transformer\.transformer_blocks\.0\.ff_norm\.", "ff_norm."),
    (r"^temporal_transformer\.transformer_blocks\.0\.ff\.", "ff."),
]


def convert_motion_key(key: str) -> str | None:
    """Our name for an upstream motion-module key (relative to `attn_temporal.`); None for the fixed frame
    code buffer (`pos_encoder.pe`), which we compute."""
    if key.endswith("pos_encoder.pe"):
        return None
    for pattern, replacement in UPSTREAM_KEYS:
        new, n = re.subn(pattern, replacement, key)
        if n:
            return new
    raise ValueError(f"unexpected upstream motion-module key {key!r}")
