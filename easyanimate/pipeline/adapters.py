"""LoRA files and motion modules on a loaded pipeline (what the CLIs and the web UI call).

A LoRA file is a safetensors state dict of peft LoRA weights for the transformer (what our training writes
with `save_lora_adapter`; keys may carry diffusers' `transformer.` prefix). Loading adds a named adapter at a
weight through the pipeline's diffusers LoRA API; `unload_loras` removes the LoRA layers, restoring the base
weights exactly.
"""

from __future__ import annotations

import os

from safetensors.torch import load_file

from ..models.kohya_lora import is_kohya_lora, merge_kohya_lora, unmerge_kohya_lora


def load_lora(pipe, path: str, weight: float = 1.0, adapter_name: str | None = None) -> str:
    """Add the LoRA in `path` at `weight`. Our peft files become a named adapter (diffusers' `load_lora_weights` +
    `set_adapters`; adapters loaded before keep their weights; a pipeline with two experts gets it in both); kohya
    files (upstream EasyAnimate's) are merged into the transformer and the text encoder as upstream does, their
    replaced weights kept for `unload_loras`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LoRA file not found: {path}")
    name = adapter_name or os.path.splitext(os.path.basename(path))[0].replace(".", "_")
    state = load_file(path)
    if not any("lora_" in k for k in state):
        raise ValueError(f"{path} holds no LoRA weights (no lora_A / lora_B or lora_down / lora_up keys)")
    if is_kohya_lora(state):
        models = {"transformer": pipe.transformer, "text_encoder": pipe.text_encoder}
        saved = merge_kohya_lora(models, state, weight, source=path)
        pipe._kohya_merged = [*getattr(pipe, "_kohya_merged", []), saved]
        return name
    pipe.load_lora_weights(state, adapter_name=name)
    # two experts: the style applies at every noise level
    if getattr(pipe, "transformer_2", None) is not None:
        pipe.load_lora_weights(state, adapter_name=name, load_into_transformer_2=True)
    weights = {**pipe.lora_weights(), name: weight}
    pipe.set_adapters(list(weights), list(weights.values()))
    return name


def unload_loras(pipe) -> None:
    """Remove every LoRA: adapters are unloaded and merged kohya LoRAs undone (latest first), so the transformer
    and the text encoder compute exactly their base outputs again."""
    pipe.unload_lora_weights()
    models = {"transformer": pipe.transformer, "text_encoder": pipe.text_encoder}
    for saved in reversed(getattr(pipe, "_kohya_merged", [])):
        unmerge_kohya_lora(models, saved)
    pipe._kohya_merged = []


def load_motion_module(pipe, directory: str, layout: str | None = None) -> None:
    """Swap in motion modules saved apart from the backbone (models/Motion_Module/<name>)."""
    pipe.transformer.load_motion_modules(directory, layout)
