"""LoRA files and motion modules on a loaded pipeline (what the CLIs and the web UI call).

A LoRA file is a safetensors state dict of peft LoRA weights for the transformer (what our training writes
with `save_lora_adapter`; keys may carry diffusers' `transformer.` prefix). Loading adds a named adapter at a
weight through the pipeline's diffusers LoRA API; `unload_loras` removes the LoRA layers, restoring the base
weights exactly.
"""

from __future__ import annotations

import os


def load_lora(pipe, path: str, weight: float = 1.0, adapter_name: str | None = None) -> str:
    """Add the LoRA in `path` as a named adapter at `weight` (diffusers' `load_lora_weights` + `set_adapters`);
    adapters loaded before keep their weights."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LoRA file not found: {path}")
    name = adapter_name or os.path.splitext(os.path.basename(path))[0].replace(".", "_")
    pipe.load_lora_weights(path, adapter_name=name)
    weights = {**pipe.lora_weights(), name: weight}
    pipe.set_adapters(list(weights), list(weights.values()))
    return name


def unload_loras(pipe) -> None:
    """Remove every LoRA layer: the transformer computes exactly its base outputs again."""
    pipe.unload_lora_weights()


def load_motion_module(pipe, directory: str) -> None:
    """Swap in motion modules saved apart from the backbone (models/Motion_Module/<name>)."""
    pipe.transformer.load_motion_modules(directory)
