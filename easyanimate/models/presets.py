"""Model sizes as small factories (DiT style): name -> function building a VideoTransformer3DModel.

Widths and depths follow DiT/PixArt: XL/2 is PixArt-alpha-XL-2 (28 blocks, width 1152, 16 heads,
about 611M parameters without motion modules). Any keyword overrides the preset (e.g. motion options).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .transformer3d import VideoTransformer3DModel


def _dit(depth: int, heads: int, head_dim: int, overrides: dict[str, Any]) -> VideoTransformer3DModel:
    config: dict[str, Any] = dict(
        num_layers=depth,
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        cross_attention_dim=heads * head_dim,
        caption_channels=4096,  # T5-XXL features, as PixArt-alpha
        in_channels=4,
        out_channels=8,
        patch_size=2,
    )
    config.update(overrides)  # every preset value can be overridden
    return VideoTransformer3DModel(**config)


def easyanimate_xl_2(**kw: Any) -> VideoTransformer3DModel:
    return _dit(28, 16, 72, kw)


def easyanimate_l_2(**kw: Any) -> VideoTransformer3DModel:
    return _dit(24, 16, 64, kw)


def easyanimate_b_2(**kw: Any) -> VideoTransformer3DModel:
    return _dit(12, 12, 64, kw)


def easyanimate_s_2(**kw: Any) -> VideoTransformer3DModel:
    return _dit(12, 6, 64, kw)


def easyanimate_tiny(**kw: Any) -> VideoTransformer3DModel:
    """For tests and the CPU demo: 4 blocks, width 32, small caption features."""
    return _dit(4, 2, 16, {"sample_size": 8, "caption_channels": 32, "out_channels": 4, **kw})


def easyanimate_demo(**kw: Any) -> VideoTransformer3DModel:
    """The CPU demo model: 6 blocks, width 128, patch 2 on the 16x16 latents of the demo VAE at 64 px (tiny T5
    features)."""
    return _dit(
        6, 4, 32, {"sample_size": 16, "patch_size": 2, "caption_channels": 64, "out_channels": 4, **kw}
    )


TRANSFORMER_PRESETS: dict[str, Callable[..., VideoTransformer3DModel]] = {
    "EasyAnimate-XL/2": easyanimate_xl_2,
    "EasyAnimate-L/2": easyanimate_l_2,
    "EasyAnimate-B/2": easyanimate_b_2,
    "EasyAnimate-S/2": easyanimate_s_2,
    "demo": easyanimate_demo,
    "tiny": easyanimate_tiny,
}


def build_transformer(name: str, **overrides: Any) -> VideoTransformer3DModel:
    """Build a preset by name; unknown names list the valid ones."""
    if name not in TRANSFORMER_PRESETS:
        raise ValueError(f"unknown transformer preset {name!r}; choose from {sorted(TRANSFORMER_PRESETS)}")
    return TRANSFORMER_PRESETS[name](**overrides)
