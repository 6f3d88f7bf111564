"""Load a pipeline folder the way the CLIs and the web UI do: dtype for the device, sampler, adapters, memory mode."""

from __future__ import annotations

import json
import os

import torch

from ..diffusion.samplers import load_scheduler
from ..models.frame_vae import FrameVAE
from ..models.text_encoder import load_text_encoder
from ..models.transformer3d import VideoTransformer3DModel
from ..models.upstream_transformer import load_transformer_checkpoint
from .adapters import load_lora, load_motion_module
from .memory import apply_memory_mode
from .pipeline_easyanimate import EasyAnimatePipeline

PIXART_PIPELINES = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")


def pipeline_class(folder: str) -> str | None:
    """The pipeline class a folder's `model_index.json` names."""
    with open(os.path.join(folder, "model_index.json")) as fh:
        name = json.load(fh).get("_class_name")
    return name[1] if isinstance(name, list) else name


def pixart_as_video_pipeline(folder: str, dtype: torch.dtype, transformer=None) -> EasyAnimatePipeline:
    """A diffusers PixArt-alpha folder as our pipeline, the way EasyAnimate v1 ran it: the transformer with
    (identity until loaded) motion modules, its 2D VAE per frame, its T5 and scheduler."""
    text = load_text_encoder(folder, dtype=dtype)
    return EasyAnimatePipeline(
        vae=FrameVAE.from_pretrained(os.path.join(folder, "vae"), dtype=dtype),
        text_encoder=text.model,
        tokenizer=text.tokenizer,
        transformer=transformer or VideoTransformer3DModel.from_pixart(folder).to(dtype),
        scheduler=load_scheduler(folder),
    )


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pipeline(
    model: str,
    sampler: str | None = None,
    motion_module: str | None = None,
    lora: str | None = None,
    lora_weight: float = 1.0,
    memory_mode: str = "none",
    device: str | None = None,
    transformer: str | None = None,
    storage_dtype: str | None = None,
    motion_layout: str | None = None,
    transformer_checkpoint: str | None = None,
) -> EasyAnimatePipeline:
    """A pipeline folder (`model_index.json`) in bf16 on a GPU and fp32 on CPU, with the sampler swapped, motion
    modules and a LoRA loaded, and a GPU memory mode applied (`memory.MEMORY_MODES`; `storage_dtype`: the
    transformer's weights stored in fp8 / bf16). `transformer`: another transformer folder in place of the
    pipeline's (a training checkpoint's `transformer/`); `transformer_checkpoint`: a bare state dict over its
    weights (a PixArt checkpoint such as upstream's portrait model). `motion_layout` names the layout of a bare
    upstream motion-module file (`easyanimate-v1`)."""
    if not os.path.isfile(os.path.join(model, "model_index.json")):
        raise FileNotFoundError(f"{model} is not a pipeline folder (no model_index.json)")
    device = device or default_device()
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    components = {}
    if transformer:
        if not os.path.isfile(os.path.join(transformer, "config.json")):
            raise FileNotFoundError(f"{transformer} is not a transformer folder (no config.json)")
        components["transformer"] = VideoTransformer3DModel.from_pretrained(transformer, dtype=dtype)
    if pipeline_class(model) in PIXART_PIPELINES:  # v1: a PixArt-alpha folder, motion modules added on top
        pipe = pixart_as_video_pipeline(model, dtype, components.get("transformer"))
    else:
        pipe = EasyAnimatePipeline.from_pretrained(model, dtype=dtype, **components)
    if transformer_checkpoint:
        if not os.path.isfile(transformer_checkpoint):
            raise FileNotFoundError(f"transformer checkpoint not found: {transformer_checkpoint}")
        load_transformer_checkpoint(pipe.transformer, transformer_checkpoint)
    if sampler:
        pipe.set_sampler(sampler)
    if motion_module:
        load_motion_module(pipe, motion_module, motion_layout)
    if lora:
        load_lora(pipe, lora, lora_weight)
    apply_memory_mode(pipe, memory_mode, device, storage_dtype)
    return pipe
