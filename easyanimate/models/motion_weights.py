"""Motion modules saved apart from the backbone (AnimateDiff's MotionAdapter idea).

A folder holds `motion_modules.safetensors` and `motion_config.json` (layout and width); it loads onto
any VideoTransformer3DModel of the same width and depth, whatever its spatial weights.
"""

from __future__ import annotations

import json
import os

from safetensors.torch import load_file, save_file

from .transformer3d import MOTION_CONFIG_KEYS

WEIGHTS_NAME = "motion_modules.safetensors"
CONFIG_NAME = "motion_config.json"
PREFIX = "motion_modules."


def _atomic_write(path: str, write) -> None:
    tmp = path + ".tmp"
    write(tmp)
    os.replace(tmp, path)  # readers never see a half-written file


def save_motion_modules(model, directory: str) -> str:
    if not len(model.motion_modules):
        raise ValueError("this model has no motion modules to save (motion_module_mode='none')")
    os.makedirs(directory, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k.startswith(PREFIX)}
    meta = {k: model.config[k] for k in MOTION_CONFIG_KEYS}
    meta.update(
        width=model.inner_dim,
        num_layers=model.config.num_layers,
        num_attention_heads=model.config.num_attention_heads,
    )
    path = os.path.join(directory, WEIGHTS_NAME)
    _atomic_write(path, lambda p: save_file(state, p, metadata={"format": "pt"}))

    def write_json(p):
        with open(p, "w") as fh:
            json.dump(meta, fh, indent=2)

    _atomic_write(os.path.join(directory, CONFIG_NAME), write_json)
    return path


def load_motion_modules(model, directory: str) -> None:
    cfg_path = os.path.join(directory, CONFIG_NAME)
    weights_path = os.path.join(directory, WEIGHTS_NAME)
    for p in (cfg_path, weights_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"motion module file missing: {p}")
    with open(cfg_path) as fh:
        meta = json.load(fh)
    if meta["width"] != model.inner_dim or meta["num_layers"] != model.config.num_layers:
        raise ValueError(
            f"motion modules in {directory} are for width {meta['width']} x {meta['num_layers']} blocks; "
            f"this transformer is {model.inner_dim} x {model.config.num_layers}"
        )
    layout = {k: meta[k] for k in MOTION_CONFIG_KEYS}
    if any(model.config[k] != v for k, v in layout.items()):
        model.set_motion_layout(**layout)
    state = {k[len(PREFIX) :]: v for k, v in load_file(weights_path).items()}
    model.motion_modules.load_state_dict(state, strict=True)
