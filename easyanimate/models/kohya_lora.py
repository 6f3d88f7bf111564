"""Kohya-style LoRA files (what upstream EasyAnimate's trainer writes, e.g. `easyanimate_portrait_lora.safetensors`).

Keys: `<name>.lora_down.weight` (r x in), `<name>.lora_up.weight` (out x r), `<name>.alpha`. `<name>` is a prefix
(`lora_unet` for the transformer, `lora_te` for the T5 text encoder) and the module's path with dots written
as underscores; the transformer's root module has an empty name, hence `lora_unet__transformer_blocks_0_...`.
Merging adds `weight x alpha / r x up @ down` to each named Linear (or 1x1 conv) weight, as upstream does;
the weights it replaced are kept so `unmerge` restores them exactly.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

PREFIXES = {"transformer": "lora_unet", "text_encoder": "lora_te"}


def is_kohya_lora(state: dict[str, torch.Tensor]) -> bool:
    return any(k.endswith(("lora_down.weight", "lora_up.weight")) for k in state)


def _groups(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    groups: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    for key, value in state.items():
        name, _, part = key.partition(".")
        groups[name][part] = value
    return groups


def _modules_by_flat_name(model: nn.Module) -> dict[str, nn.Module]:
    """Every module under its path with dots as underscores (the kohya spelling; unambiguous per model)."""
    return {name.replace(".", "_"): module for name, module in model.named_modules() if name}


def kohya_targets(
    models: dict[str, nn.Module], state: dict[str, torch.Tensor], source: str = "LoRA"
) -> list[tuple[str, str, nn.Module, dict[str, torch.Tensor]]]:
    """`(part, flat name, layer, {lora_down.weight, lora_up.weight[, alpha]})` for every LoRA entry. Every entry
    must name a layer of a given model whose weight has the shape `up @ down` makes: anything else is an error
    naming the key (a LoRA for another architecture must not half-apply). Shapes only: works on `meta`."""
    tables = {part: _modules_by_flat_name(model) for part, model in models.items()}
    targets = []
    for name, parts in _groups(state).items():
        part = next((p for p, prefix in PREFIXES.items() if name.startswith(prefix + "_")), None)
        if part is None:
            raise ValueError(f"{source}: key {name!r} has neither the lora_unet_ nor the lora_te_ prefix")
        if part not in models:
            raise ValueError(
                f"{source}: {name!r} is for the {part.replace('_', ' ')}, which this pipeline lacks"
            )
        flat = name[len(PREFIXES[part]) + 1 :].lstrip("_")  # lora_unet__x: the root module's empty name
        module = tables[part].get(flat)
        if module is None or not isinstance(getattr(module, "weight", None), torch.Tensor):
            raise ValueError(f"{source}: {name!r} names no layer of the {part.replace('_', ' ')}")
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            raise ValueError(f"{source}: {name!r} lacks lora_down.weight or lora_up.weight")
        up, down = parts["lora_up.weight"], parts["lora_down.weight"]
        shape = (up.shape[0], down.flatten(1).shape[1])
        if up.shape[1] != down.shape[0] or module.weight.flatten(1).shape != shape:
            raise ValueError(
                f"{source}: {name!r} makes a {shape[0]}x{shape[1]} update for a layer of shape "
                f"{tuple(module.weight.shape)}"
            )
        targets.append((part, flat, module, parts))
    return targets


def merge_kohya_lora(
    models: dict[str, nn.Module], state: dict[str, torch.Tensor], weight: float = 0.55, source: str = "LoRA"
) -> dict[str, dict[str, torch.Tensor]]:
    """Add the LoRA in `state` to `models` ({"transformer": ..., "text_encoder": ...}) at `weight`.

    Returns the replaced weights per model and module name (on CPU), for `unmerge_kohya_lora`. Nothing is
    changed unless every entry fits (`kohya_targets`)."""
    targets = kohya_targets(models, state, source)
    saved: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    with torch.no_grad():
        for part, flat, module, parts in targets:
            up, down = parts["lora_up.weight"].float(), parts["lora_down.weight"].float()
            rank = up.shape[1]
            scale = float(parts["alpha"]) / rank if "alpha" in parts else 1.0
            delta = (up.flatten(1) @ down.flatten(1)).reshape(module.weight.shape)
            if flat not in saved[part]:
                saved[part][flat] = module.weight.detach().to("cpu", copy=True)
            merged = module.weight.float() + weight * scale * delta.to(module.weight.device)
            module.weight.copy_(merged.to(module.weight.dtype))
    return dict(saved)


def unmerge_kohya_lora(models: dict[str, nn.Module], saved: dict[str, dict[str, torch.Tensor]]) -> None:
    """Put back the weights `merge_kohya_lora` replaced, bit for bit."""
    with torch.no_grad():
        for part, weights in saved.items():
            table = _modules_by_flat_name(models[part])
            for flat, original in weights.items():
                table[flat].weight.copy_(original.to(table[flat].weight.device))
