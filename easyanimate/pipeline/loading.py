"""Load a pipeline folder the way the CLIs and the web UI do: dtype for the device, sampler, adapters, memory mode."""

from __future__ import annotations

import json
import os

import torch

from ..diffusion.samplers import load_scheduler
from ..models.loading import load_vae
from ..models.text_encoder import load_text_encoder
from ..models.transformer3d import VideoTransformer3DModel
from ..models.upstream_transformer import is_upstream_folder, load_transformer_checkpoint
from .adapters import load_lora, load_motion_module
from .memory import apply_memory_mode
from .pipeline_easyanimate import EasyAnimatePipeline

PIXART_PIPELINES = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")


def pipeline_class(folder: str) -> str | None:
    """The pipeline class a folder's `model_index.json` names."""
    with open(os.path.join(folder, "model_index.json")) as fh:
        name = json.load(fh).get("_class_name")
    return name[1] if isinstance(name, list) else name


def is_upstream_release(folder: str) -> bool:
    """An upstream EasyAnimate V2 / V3 release folder: its transformer/ is upstream's Transformer3DModel."""
    return is_upstream_folder(os.path.join(folder, "transformer"))


def assembled_pipeline(folder: str, dtype: torch.dtype, transformer=None) -> EasyAnimatePipeline:
    """A folder whose components are not our classes, assembled one by one: a diffusers PixArt-alpha folder the
    way EasyAnimate v1 ran it (the transformer with motion modules, identity until loaded, and its 2D VAE per
    frame), or an upstream V2 / V3 release (its transformer converted, its own VAE, and for V3 InP the CLIP
    image encoder in `image_encoder/`)."""
    text = load_text_encoder(folder, dtype=dtype)
    if transformer is None:
        if is_upstream_release(folder):
            transformer = VideoTransformer3DModel.from_pretrained(
                os.path.join(folder, "transformer"), dtype=dtype
            )
        else:
            transformer = VideoTransformer3DModel.from_pixart(folder).to(dtype)
    image_encoder = feature_extractor = None
    clip_folder = os.path.join(folder, "image_encoder")
    if getattr(transformer, "clip_projection", None) is not None and os.path.isdir(clip_folder):
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        image_encoder = CLIPVisionModelWithProjection.from_pretrained(clip_folder, torch_dtype=dtype)
        feature_extractor = CLIPImageProcessor.from_pretrained(clip_folder)
    return EasyAnimatePipeline(
        vae=load_vae(folder).to(dtype),
        text_encoder=text.model,
        tokenizer=text.tokenizer,
        transformer=transformer,
        scheduler=load_scheduler(folder),
        image_encoder=image_encoder,
        feature_extractor=feature_extractor,
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
    if pipeline_class(model) in PIXART_PIPELINES or is_upstream_release(model):
        pipe = assembled_pipeline(model, dtype, components.get("transformer"))
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
