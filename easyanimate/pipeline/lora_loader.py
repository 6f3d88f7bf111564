"""diffusers' LoRA API on our pipeline: `load_lora_weights`, `set_adapters`, `fuse_lora`, `unfuse_lora`,
`unload_lora_weights`, `save_lora_weights`, for the transformer (the only LoRA-loadable part; with two experts,
either of them: `load_into_transformer_2`, as diffusers' Wan 2.2 pipelines).

The loading, naming and fusing are diffusers' own (its transformer-only LoRA mixin, the one CogVideoX uses);
what we add is reading our files: peft LoRA keys with or without diffusers' `transformer.` prefix.
"""

from __future__ import annotations

import os

import torch
from diffusers.loaders.lora_pipeline import CogVideoXLoraLoaderMixin
from safetensors.torch import load_file

from ..models.kohya_lora import is_kohya_lora


def _is_lora_key(key: str) -> bool:
    return "lora_A" in key or "lora_B" in key


class EasyAnimateLoraLoaderMixin(CogVideoXLoraLoaderMixin):
    # a pipeline with two experts has `transformer_2` too (diffusers' Wan 2.2 layout); the base mixin's
    # set_adapters / fuse / unload skip a component that is None
    _lora_loadable_modules = ["transformer", "transformer_2"]
    transformer_name = "transformer"

    def load_lora_weights(
        self, pretrained_model_name_or_path_or_dict, adapter_name=None, hotswap=False, **kwargs
    ):
        """diffusers' loading into `transformer`; `load_into_transformer_2=True` (Wan 2.2's flag) loads into the
        low-noise expert instead."""
        if not kwargs.pop("load_into_transformer_2", False):
            return super().load_lora_weights(
                pretrained_model_name_or_path_or_dict, adapter_name=adapter_name, hotswap=hotswap, **kwargs
            )
        if getattr(self, "transformer_2", None) is None:
            raise ValueError(
                "load_into_transformer_2=True: this pipeline has one transformer (no transformer_2)"
            )
        low_cpu_mem_usage = kwargs.pop("low_cpu_mem_usage", False)
        state, metadata = self.lora_state_dict(
            pretrained_model_name_or_path_or_dict, **{**kwargs, "return_lora_metadata": True}
        )
        self.load_lora_into_transformer(
            state,
            transformer=self.transformer_2,
            adapter_name=adapter_name,
            metadata=metadata,
            _pipeline=self,
            low_cpu_mem_usage=low_cpu_mem_usage,
            hotswap=hotswap,
        )

    @classmethod
    def lora_state_dict(cls, pretrained_model_name_or_path_or_dict, **kwargs):
        """A LoRA state dict (a safetensors file, a folder holding one, or a dict) with every key under
        `transformer.`; a clear error when it holds no LoRA weights."""
        source = pretrained_model_name_or_path_or_dict
        return_metadata = kwargs.get("return_lora_metadata", False)
        metadata = None
        if isinstance(source, (str, os.PathLike)) and os.path.isfile(source):
            state = load_file(str(source))  # a file path (diffusers' own reader wants a folder + weight_name)
        elif isinstance(source, dict):
            state = dict(source)
        else:
            state, metadata = super().lora_state_dict(source, **{**kwargs, "return_lora_metadata": True})
        what = "the state dict" if isinstance(source, dict) else source
        if is_kohya_lora(state):
            raise ValueError(
                f"{what} is a kohya-style LoRA (upstream "
                "EasyAnimate's): load it with easyanimate.pipeline.adapters.load_lora(pipe, path, weight), which "
                "merges it as upstream does"
            )
        if not state or not any(_is_lora_key(k) for k in state):
            raise ValueError(f"{what} holds no LoRA weights (no lora_A / lora_B keys)")
        state = {k if k.startswith("transformer.") else f"transformer.{k}": v for k, v in state.items()}
        return (state, metadata) if return_metadata else state

    def lora_weights(self) -> dict[str, float]:
        """Each loaded adapter's weight (1.0 unless `set_adapters` gave another)."""
        weights = getattr(self, "_lora_weights", {})
        return {name: weights.get(name, 1.0) for name in getattr(self.transformer, "peft_config", {}) or {}}

    def set_adapters(self, adapter_names, adapter_weights=None):
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        weights = (
            adapter_weights if isinstance(adapter_weights, (list, tuple)) else [adapter_weights] * len(names)
        )
        super().set_adapters(names, adapter_weights)
        self._lora_weights = {n: 1.0 if w is None else float(w) for n, w in zip(names, weights)}

    @torch.no_grad()
    def unload_lora_weights(self, *args, **kwargs):
        super().unload_lora_weights(*args, **kwargs)
        self._lora_weights = {}
