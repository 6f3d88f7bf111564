"""Load a transformer or a VAE from whatever a user names: a preset (fresh weights) or a folder.

A transformer folder is ours (VideoTransformer3DModel) or diffusers' PixArt-alpha (mapped by `from_pixart`),
told apart by the class named in its `config.json`; a VAE folder is a SliceVAE / AutoencoderKLMagvit, or a
pipeline folder holding `vae/`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from .frame_vae import FrameVAE
from .frame_vae import config_shape_rule as frame_shape_rule
from .presets import TRANSFORMER_PRESETS, build_transformer
from .shape_rule import ShapeRule
from .slice_vae import VAE_PRESETS, SliceVAE, build_vae, config_shape_rule
from .transformer3d import VideoTransformer3DModel
from .upstream_vae import UpstreamMagvitVAE, is_upstream_vae_config
from .upstream_vae import config_shape_rule as upstream_shape_rule

PIXART_CLASSES = ("PixArtTransformer2DModel", "Transformer2DModel")


def load_transformer(
    source: str, caption_channels: int | None = None, **options: Any
) -> VideoTransformer3DModel:
    """A preset (fresh; `caption_channels` sizes its caption projection), a PixArt-alpha folder or one of our
    transformer folders. `options`: preset overrides, or the motion layout to give a loaded model."""
    if source in TRANSFORMER_PRESETS:
        extra = {} if caption_channels is None else {"caption_channels": caption_channels}
        return build_transformer(source, **{**extra, **options})
    config_path = os.path.join(source, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"transformer {source!r} is neither a preset {sorted(TRANSFORMER_PRESETS)} nor a folder"
        )
    with open(config_path) as fh:
        class_name = json.load(fh).get("_class_name")
    # frame-by-frame generation is a behaviour of the motion modules, not a new layout: applied after loading,
    # so a trained t2v model keeps its motion weights when it becomes autoregressive
    history = options.pop("autoregressive_history", None)
    chunk = options.pop("autoregressive_chunk", None)
    causal = options.pop("motion_causal", None)
    if causal is not None and bool(causal) != (history is not None):
        raise ValueError(
            "motion_causal comes with autoregressive_history (a frame-by-frame model) and not alone"
        )
    if chunk is not None and history is None:
        raise ValueError("autoregressive_chunk comes with autoregressive_history (an autoregressive model)")
    if class_name in PIXART_CLASSES:
        model = VideoTransformer3DModel.from_pixart(source, **options)
    else:
        model = VideoTransformer3DModel.from_pretrained(source)
        if options:
            model.set_motion_layout(**options)
    if history is not None:
        model.set_autoregressive(list(history), int(chunk or 1))
    return model


def read_vae_config(folder: str) -> dict[str, Any]:
    with open(os.path.join(folder, "config.json")) as fh:
        return json.load(fh)


def vae_class(config: dict[str, Any]) -> type:
    """The class a VAE folder's config asks for: upstream EasyAnimate's V2 / V3 MagViT (its own keys), v1's
    per-frame 2D `AutoencoderKL` (PixArt's `vae/`), else our SliceVAE (diffusers `AutoencoderKLMagvit`)."""
    if is_upstream_vae_config(config):
        return UpstreamMagvitVAE
    if config.get("_class_name") == "AutoencoderKL":
        return FrameVAE
    return SliceVAE


def vae_shape_rule(config: dict[str, Any]) -> ShapeRule:
    """The frame / size rule of a VAE config, without building the VAE."""
    cls = vae_class(config)
    if cls is UpstreamMagvitVAE:
        return upstream_shape_rule(config)
    if cls is FrameVAE:
        return frame_shape_rule(config)
    return config_shape_rule(config)


def load_vae(model: str, options: dict[str, Any] | None = None):
    """A preset name (fresh SliceVAE, `options` overriding the preset) or a folder (or a pipeline with vae/):
    the class its config asks for (`vae_class`)."""
    if model in VAE_PRESETS:
        return build_vae(model, **(options or {}))
    if options:
        raise ValueError(f"model_options apply to a preset only; {model!r} is a folder")
    folder = os.path.join(model, "vae") if os.path.isdir(os.path.join(model, "vae")) else model
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(
            f"model {model!r} is neither a VAE preset {sorted(VAE_PRESETS)} nor a VAE folder"
        )
    return vae_class(read_vae_config(folder)).from_pretrained(folder)


def transformer_patch_size(source: str, **options: Any) -> int:
    """The patch size of what `load_transformer(source, **options)` would build, without loading weights."""
    if "patch_size" in options:
        return int(options["patch_size"])
    if source in TRANSFORMER_PRESETS:
        with torch.device("meta"):  # shapes only: instant even for XL/2
            return int(build_transformer(source).config.patch_size)
    with open(os.path.join(source, "config.json")) as fh:
        return int(json.load(fh).get("patch_size", 2))


def transformer_history(source: str, **options: Any) -> list[int] | None:
    """The `autoregressive_history` of what `load_transformer(source, **options)` would build (None: whole clips),
    without loading weights."""
    if "autoregressive_history" in options:
        return options["autoregressive_history"]
    config_path = os.path.join(source, "config.json")
    if source in TRANSFORMER_PRESETS or not os.path.isfile(config_path):
        return None
    with open(config_path) as fh:
        return json.load(fh).get("autoregressive_history")


def pipeline_shape_rule(folder: str) -> ShapeRule:
    """The frame / size rule of a pipeline folder (its VAE's ratios x its transformer's patch), read from the
    configs alone: the web UI checks a request before it loads any weights."""
    vae = vae_shape_rule(read_vae_config(os.path.join(folder, "vae")))
    rule = vae.with_patch(transformer_patch_size(os.path.join(folder, "transformer")))
    return rule.with_patch(pyramid_factor(folder))


def pyramid_factor(folder: str) -> int:
    """How much smaller than full size a pipeline folder's smallest latent is per side: a spatial-pyramid
    model's coarsest stage (its saved sampler says), an autoregressive model's most compressed history frame
    (its transformer config says); 1 for every other model. Sizes must be whole patches at every size."""
    factor = 1
    path = os.path.join(folder, "scheduler", "scheduler_config.json")
    if os.path.isfile(path):
        with open(path) as fh:
            config = json.load(fh)
        if config.get("_class_name") == "PyramidFlowScheduler":
            factor = 2 ** (int(config.get("stages", 1)) - 1)
    path = os.path.join(folder, "transformer", "config.json")
    if os.path.isfile(path):
        with open(path) as fh:
            history = json.load(fh).get("autoregressive_history") or [1]
        factor = max(factor, *history)
    return factor


def pipeline_default_size(folder: str) -> int:
    """The side a pipeline folder's transformer was built for, in pixels (its sample size x the VAE's ratio)."""
    vae = vae_shape_rule(read_vae_config(os.path.join(folder, "vae")))
    with open(os.path.join(folder, "transformer", "config.json")) as fh:
        return int(json.load(fh)["sample_size"]) * vae.size_multiple
