"""Load a diffusers PixArt-alpha transformer into a VideoTransformer3DModel.

The spatial blocks keep PixArt's parameter names, so weights map one to one; motion modules and
long skips are new (identity at init). Optionally the patch embedding is widened for inpaint inputs
(`in_channels = 2*C + 1`) with zero weights on the extra channels, so the model starts out exactly as
the text-to-video one.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

logger = logging.getLogger(__name__)

PIXART_CLASS_NAMES = {"PixArtTransformer2DModel", "Transformer2DModel"}
# Config keys shared by PixArt and our model (the rest of PixArt's config is legacy/unused).
PIXART_CONFIG_KEYS = (
    "num_attention_heads",
    "attention_head_dim",
    "in_channels",
    "out_channels",
    "num_layers",
    "dropout",
    "cross_attention_dim",
    "attention_bias",
    "sample_size",
    "patch_size",
    "activation_fn",
    "num_embeds_ada_norm",
    "upcast_attention",
    "norm_elementwise_affine",
    "norm_eps",
    "interpolation_scale",
    "use_additional_conditions",
    "caption_channels",
)
# Keys every PixArt-alpha transformer has; their absence means the checkpoint is something else.
PIXART_SIGNATURE = (
    "pos_embed.proj.weight",
    "adaln_single.linear.weight",
    "scale_shift_table",
    "proj_out.weight",
    "transformer_blocks.0.attn2.to_q.weight",
)
NEW_MODULE_PREFIXES = ("motion_modules.", "skip_linears.")


def _resolve_folder(path: str) -> str:
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    sub = os.path.join(path, "transformer")
    if os.path.isfile(os.path.join(sub, "config.json")):
        return sub  # a whole pipeline folder was given
    raise FileNotFoundError(f"no PixArt transformer config.json in {path!r} or {sub!r}")


def read_weights(folder: str) -> dict[str, torch.Tensor]:
    single = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    index = single + ".index.json"
    if os.path.isfile(single):
        return load_file(single)
    if os.path.isfile(index):
        with open(index) as fh:
            shards = sorted(set(json.load(fh)["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(os.path.join(folder, shard)))
        return state
    legacy = os.path.join(folder, "diffusion_pytorch_model.bin")
    if os.path.isfile(legacy):
        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"no diffusion_pytorch_model weights (.safetensors, sharded or .bin) in {folder!r}"
    )


def read_pixart(path_or_model: str | nn.Module) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config and state dict of a PixArt-alpha transformer; clear errors for anything else."""
    if isinstance(path_or_model, nn.Module):
        config = dict(getattr(path_or_model, "config", {}))
        config.setdefault("_class_name", type(path_or_model).__name__)
        state = path_or_model.state_dict()
        source = type(path_or_model).__name__
    else:
        folder = _resolve_folder(str(path_or_model))
        with open(os.path.join(folder, "config.json")) as fh:
            config = json.load(fh)
        state = None
        source = folder
    name = config.get("_class_name")
    if name not in PIXART_CLASS_NAMES or config.get("norm_type", "ada_norm_single") != "ada_norm_single":
        raise ValueError(
            f"{source} is not a PixArt-alpha transformer: expected one of {sorted(PIXART_CLASS_NAMES)} with "
            f"norm_type='ada_norm_single', found _class_name={name!r}, norm_type={config.get('norm_type')!r}"
        )
    if state is None:
        state = read_weights(folder)
    absent = [k for k in PIXART_SIGNATURE if k not in state]
    if absent:
        raise ValueError(f"{source} is not PixArt-shaped: its weights lack {absent}")
    return config, state


def video_transformer_from_pixart(
    cls,
    path_or_model: str | nn.Module,
    in_channels: int | None = None,
    output_loading_info: bool = False,
    dtype: torch.dtype | None = None,
    **video_options: Any,
):
    """See `VideoTransformer3DModel.from_pixart`.

    Returns the model, or `(model, info)` with `output_loading_info=True`, where info lists
    `missing_keys` (none for a PixArt checkpoint), `unexpected_keys` and `new_keys` (fresh motion
    modules / skips).
    """
    config, state = read_pixart(path_or_model)
    kwargs = {k: config[k] for k in PIXART_CONFIG_KEYS if k in config}
    base_in = kwargs.get("in_channels", 4)
    if kwargs.get("out_channels") is None:
        kwargs["out_channels"] = base_in  # PixArt's None means "same as input": keep it when widening
    model = cls(**kwargs, **video_options)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # size mismatches
        raise ValueError(f"PixArt weights do not fit the video transformer: {err}") from err
    new_keys = [k for k in missing if k.startswith(NEW_MODULE_PREFIXES)]
    missing = [k for k in missing if not k.startswith(NEW_MODULE_PREFIXES)]
    if missing:
        raise ValueError(f"PixArt checkpoint is missing {len(missing)} backbone weights, e.g. {missing[:5]}")
    if unexpected:
        logger.warning("from_pixart: %d unexpected keys ignored, e.g. %s", len(unexpected), unexpected[:5])
    logger.info(
        "from_pixart: loaded %d PixArt tensors, %d new (motion/skip) tensors", len(state), len(new_keys)
    )
    if in_channels is not None:
        model.widen_inputs(in_channels)  # zero weights on the extra (mask / masked-latent) channels
    if dtype is not None:
        model = model.to(dtype)
    if output_loading_info:
        return model, {"missing_keys": missing, "unexpected_keys": list(unexpected), "new_keys": new_keys}
    return model
