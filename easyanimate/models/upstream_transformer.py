"""Upstream EasyAnimate's `Transformer3DModel` folders (v1, v2, v3 releases) as our `VideoTransformer3DModel`.

The config says which release it is: `motion_module_type` VanillaGrid (v1) or Vanilla, one motion-module setting
(v1, v2) or one for even and one for odd blocks (v3's temporal / global layers), `enable_uvit` (v2, v3: 13 long
skips into blocks 15..27), 12 input channels (v3 InP: noisy | mask | masked-video latents, plus a CLIP image
embedding projected to 8 context tokens). Keys are converted and loaded strictly: anything left over or missing
is an error naming it. Settings upstream had but the releases never used are refused, not ignored.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import torch

from .pixart_weights import read_weights
from .upstream_motion import convert_motion_key

UPSTREAM_CLASS = "Transformer3DModel"
# upstream options that change the computation and that no release sets: refused when set
_UNSUPPORTED = {
    "patch_3d": False,
    "fake_3d": False,
    "casual_3d": False,
    "time_position_encoding_before_transformer": False,
    "after_norm": False,
    "qk_norm": False,
    "norm_type": "ada_norm_single",
}
_UNSUPPORTED_MOTION = {
    "num_transformer_block": 1,
    "temporal_attention_dim_div": 1,
    "remove_time_embedding_in_photo": False,
    "cross_frame_attention_mode": None,
    "qk_norm": False,
    "global_attention": False,
}


def is_upstream_folder(folder: str) -> bool:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return False
    with open(path) as fh:
        return json.load(fh).get("_class_name") == UPSTREAM_CLASS


def _motion_settings(config: dict[str, Any], source: str) -> dict[str, Any]:
    block = config.get("basic_block_type")
    if block not in ("motionmodule", "global_motionmodule"):
        raise ValueError(f"{source}: basic_block_type {block!r} is not a released EasyAnimate layout")
    even = config.get("motion_module_kwargs_even") or config.get("motion_module_kwargs")
    odd = config.get("motion_module_kwargs_odd") or even
    if not even:
        raise ValueError(f"{source}: no motion_module_kwargs")
    for kwargs in (even, odd):
        for key, expected in _UNSUPPORTED_MOTION.items():
            if kwargs.get(key, expected) != expected:
                raise ValueError(f"{source}: motion module setting {key}={kwargs[key]!r} is not supported")
    if even["num_attention_heads"] != odd["num_attention_heads"]:
        raise ValueError(f"{source}: even and odd motion modules with different head counts")
    kinds = [[t.split("_")[0].lower() for t in kw["attention_block_types"]] for kw in (even, odd)]
    if any(k not in ("temporal", "global") for layer in kinds for k in layer) or any(
        not t.endswith("_Self") for kw in (even, odd) for t in kw["attention_block_types"]
    ):
        raise ValueError(f"{source}: attention_block_types {kinds} (only Temporal_Self / Global_Self exist)")
    grid_mode = config.get("motion_module_type") == "VanillaGrid"
    if config.get("motion_module_type") not in ("Vanilla", "VanillaGrid"):
        raise ValueError(f"{source}: motion_module_type {config.get('motion_module_type')!r}")
    return dict(
        motion_module_mode="easyanimate",
        motion_grid_size=int(even.get("block_size", 1)) if grid_mode else 1,
        motion_num_heads=int(even["num_attention_heads"]),
        motion_attention_kinds=kinds,
    )


def upstream_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Our `VideoTransformer3DModel` arguments for an upstream `Transformer3DModel` config."""
    for key, expected in _UNSUPPORTED.items():
        if config.get(key) is not None and config[key] != expected:
            raise ValueError(f"{source}: {key}={config[key]!r} is not supported")
    kept = (
        "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "num_layers",
        "cross_attention_dim", "attention_bias", "sample_size", "patch_size", "activation_fn",
        "num_embeds_ada_norm", "norm_elementwise_affine", "norm_eps", "caption_channels",
    )  # fmt: skip
    ours = {k: config[k] for k in kept if k in config}
    ours.update(_motion_settings(config, source))
    if config.get("enable_uvit"):
        ours.update(use_long_skips=True, long_skip_layout="easyanimate")
    if config.get("in_channels") == 12 and config.get("caption_channels") is not None:
        ours["clip_channels"] = 768  # upstream builds clip_projection for 12-channel (InP) models
    return ours


def convert_key(key: str) -> str | None:
    """Our name for an upstream transformer key (None: a buffer we compute)."""
    m = re.match(r"^transformer_blocks\.(\d+)\.attn_temporal\.(.*)$", key)
    if m:
        inner = convert_motion_key(m.group(2))
        return None if inner is None else f"motion_modules.{m.group(1)}.{inner}"
    m = re.match(r"^long_connect_fc\.(\d+)\.(.*)$", key)
    if m:
        return f"skip_linears.{15 + int(m.group(1))}.{m.group(2)}"
    return key


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    converted = {}
    for key, value in state.items():
        new = convert_key(key)
        if new is not None:
            converted[new] = value
    return converted


def load_upstream_transformer(cls, folder: str, dtype: torch.dtype | None = None):
    """An upstream `Transformer3DModel` folder (config.json + weights) as `cls` (our VideoTransformer3DModel)."""
    with open(os.path.join(folder, "config.json")) as fh:
        config = json.load(fh)
    model = cls(**upstream_config(config, source=folder))
    load_converted(model, read_weights(folder), folder)
    return model.to(dtype) if dtype is not None else model


def load_converted(model, state: dict[str, torch.Tensor], source: str) -> None:
    """Load upstream-named weights strictly: every key must land and every parameter must be filled."""
    result = model.load_state_dict(convert_state_dict(state), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{source}: upstream weights do not fit the model their config describes: "
            f"missing {result.missing_keys[:8]}{' ...' if len(result.missing_keys) > 8 else ''}, "
            f"unexpected {result.unexpected_keys[:8]}{' ...' if len(result.unexpected_keys) > 8 else ''}"
        )


def _read_state_file(path: str) -> dict[str, torch.Tensor]:
    """A bare state dict: safetensors, or a torch file (tensors only; a nested `state_dict` is unwrapped)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def is_upstream_motion_file(path: str) -> bool:
    """A safetensors file holding only upstream motion-module keys (read from its header, no weights)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as fh:
            keys = list(fh.keys())
    except Exception:  # not a readable safetensors file: not listed
        return False
    return bool(keys) and all(".attn_temporal." in k for k in keys)


def load_upstream_motion_file(model, path: str, layout: str | None) -> None:
    """A bare upstream motion-module file (`easyanimate_v1_mm.safetensors`: the `attn_temporal` keys of every
    block) onto `model` in the named layout; the file alone does not say it (upstream's yaml did)."""
    from .motion_adapter import UPSTREAM_LAYOUTS

    if layout not in UPSTREAM_LAYOUTS:
        raise ValueError(
            f"{path} is a bare motion-module file, which does not record its layout: name it "
            f"(motion layout one of {sorted(UPSTREAM_LAYOUTS)}; --motion-layout on the command line)"
        )
    state = _read_state_file(path)
    foreign = [k for k in state if ".attn_temporal." not in k]
    if foreign:
        raise ValueError(f"{path}: not an upstream motion-module file (e.g. key {foreign[0]!r})")
    model.set_motion_layout(**UPSTREAM_LAYOUTS[layout])
    converted = convert_state_dict(state)
    expected = {k for k in model.state_dict() if k.startswith("motion_modules.")}
    missing, unexpected = sorted(expected - set(converted)), sorted(set(converted) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit layout {layout!r} on this transformer: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    model.load_state_dict(converted, strict=False)


def load_transformer_checkpoint(model, path: str) -> None:
    """A bare transformer state dict over `model`'s weights: a PixArt checkpoint (upstream's portrait model) or an
    upstream / our full state dict. Every key must land on a parameter of the same shape; parts the file lacks
    (motion modules, long skips of a PixArt checkpoint) keep their weights."""
    state = convert_state_dict(_read_state_file(path))
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    if unknown:
        raise ValueError(
            f"{path}: {len(unknown)} keys fit no parameter of this transformer, e.g. {unknown[:3]}"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"{path}: {k} has shape {tuple(state[k].shape)}, the transformer's is {tuple(own[k].shape)}"
        )
    backbone = {k for k, _ in model.backbone_parameters()}
    absent = sorted(backbone - set(state))
    if absent:
        raise ValueError(f"{path} lacks {len(absent)} backbone weights, e.g. {absent[:3]}")
    model.load_state_dict(state, strict=False)
