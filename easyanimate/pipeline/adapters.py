"""LoRA files and motion modules on a loaded pipeline.

A LoRA file is a safetensors state dict of peft LoRA weights for the transformer (what our training writes
with `save_lora_adapter`; keys may carry diffusers' `transformer.` prefix). Loading adds a named peft adapter
at a weight; `unload_loras` removes the LoRA layers, restoring the base weights exactly.
"""

from __future__ import annotations

import os

from safetensors.torch import load_file


def load_lora(pipe, path: str, weight: float = 1.0, adapter_name: str | None = None) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LoRA file not found: {path}")
    state = load_file(path)
    if not state or not any("lora_A" in k or "lora_B" in k for k in state):
        raise ValueError(f"{path} holds no LoRA weights (no lora_A / lora_B keys)")
    prefixed = all(k.startswith("transformer.") for k in state)
    name = adapter_name or os.path.splitext(os.path.basename(path))[0].replace(".", "_")
    pipe.transformer.load_lora_adapter(state, prefix="transformer" if prefixed else None, adapter_name=name)
    names = list(pipe.transformer.peft_config)
    weights = [weight if n == name else _current_weight(pipe, n) for n in names]
    pipe.transformer.set_adapters(names, weights=weights)
    pipe._lora_weights = {**getattr(pipe, "_lora_weights", {}), name: weight}
    return name


def _current_weight(pipe, name: str) -> float:
    return getattr(pipe, "_lora_weights", {}).get(name, 1.0)


def unload_loras(pipe) -> None:
    """Remove every LoRA layer: the transformer computes exactly its base outputs again."""
    if getattr(pipe.transformer, "peft_config", None):
        pipe.transformer.unload_lora()
    pipe._lora_weights = {}


def load_motion_module(pipe, directory: str) -> None:
    """Swap in motion modules saved apart from the backbone (models/Motion_Module/<name>)."""
    pipe.transformer.load_motion_modules(directory)
