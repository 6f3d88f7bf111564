"""The motion modules of a video DiT as their own model (diffusers' `MotionAdapter` idea, AnimateDiff's split).

`MotionAdapter` is a `ModelMixin, ConfigMixin`: one `MotionModule` after each chosen spatial block, its
children named by block index, so inside `VideoTransformer3DModel` (which holds it as `motion_modules`) the
weights read `motion_modules.<block>.…` as PixArt-based checkpoints and LoRA targets expect. Alone it saves and
loads as a diffusers folder (`config.json` + safetensors) and fits any transformer of the same width and depth,
whatever its spatial weights. Upstream-compatible layouts live here as further `motion_module_mode`s.
"""

from __future__ import annotations

import os
from typing import Any

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME

from .motion_module import MotionModule
from .replace import write_replacing
from .upstream_motion import UpstreamMotionModule

# "easyanimate": upstream EasyAnimate v1-v3's module, run inside each block (see upstream_motion.py)
MOTION_MODES = ("none", "vanilla", "grid", "hybrid", "easyanimate")
# the layout keys: in an adapter's config and in the config of the transformer holding it
MOTION_CONFIG_KEYS = (
    "motion_module_mode",
    "motion_module_every",
    "motion_grid_size",
    "motion_num_attention_layers",
    "motion_ff_mult",
    "motion_num_heads",
    "motion_attention_kinds",
    "motion_text_attention",
    "motion_causal",
)
T, G = "temporal", "global"
# upstream EasyAnimate's released layouts (`motion_attention_kinds`: the layers of even and of odd blocks)
UPSTREAM_LAYOUTS: dict[str, dict[str, Any]] = {
    "easyanimate-v1": dict(motion_module_mode="easyanimate", motion_grid_size=2, motion_num_heads=8,
                           motion_attention_kinds=[[T, T], [T, T]]),
    "easyanimate-v2": dict(motion_module_mode="easyanimate", motion_grid_size=1, motion_num_heads=8,
                           motion_attention_kinds=[[T, T], [T, T]]),
    "easyanimate-v3": dict(motion_module_mode="easyanimate", motion_grid_size=1, motion_num_heads=16,
                           motion_attention_kinds=[[T, T], [T, G]]),
}  # fmt: skip


def motion_layout(num_layers: int, mode: str, every: int) -> dict[int, str]:
    """Which blocks get a motion module and of which kind ("temporal", "grid" or "full").

    `every=k` puts one after blocks 0, k, 2k, ...; "hybrid" alternates temporal and full (all
    F*H*W tokens) attention, starting with temporal.
    """
    if mode not in MOTION_MODES:
        raise ValueError(f"motion_module_mode must be one of {MOTION_MODES}, got {mode!r}")
    if mode == "none" or every <= 0:
        return {}
    blocks = [i for i in range(num_layers) if i % every == 0]
    if mode == "vanilla":
        return {i: "temporal" for i in blocks}
    if mode == "grid":
        return {i: "grid" for i in blocks}
    if mode == "easyanimate":
        return {i: "inside" for i in blocks}  # run inside the block, between self- and cross-attention
    return {i: ("temporal" if k % 2 == 0 else "full") for k, i in enumerate(blocks)}


class MotionAdapter(ModelMixin, ConfigMixin):
    """Motion modules for a DiT of `num_layers` blocks of width `num_attention_heads * attention_head_dim`."""

    _no_split_modules = ["MotionModule", "UpstreamMotionModule"]

    @register_to_config
    def __init__(
        self,
        num_layers: int = 28,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        motion_module_mode: str = "vanilla",
        motion_module_every: int = 1,
        motion_grid_size: int = 2,
        motion_num_attention_layers: int = 2,
        motion_ff_mult: int = 4,
        norm_eps: float = 1e-6,
        motion_num_heads: int | None = None,
        motion_attention_kinds: list[list[str]] | None = None,
        motion_text_attention: bool = False,
        motion_causal: bool = False,
    ):
        super().__init__()
        self.width = num_attention_heads * attention_head_dim
        self.kinds = motion_layout(num_layers, motion_module_mode, motion_module_every)
        if motion_causal and motion_module_mode == "easyanimate":
            raise ValueError("motion_causal (autoregressive models) needs our motion modules, not upstream's")
        for i in self.kinds:
            if motion_module_mode == "easyanimate":
                if not motion_num_heads or not motion_attention_kinds:
                    raise ValueError(
                        "motion_module_mode 'easyanimate' needs motion_num_heads and motion_attention_kinds"
                    )
                kinds = motion_attention_kinds[i % len(motion_attention_kinds)]
                module = UpstreamMotionModule(self.width, motion_num_heads, kinds, grid=motion_grid_size)
            else:
                module = MotionModule(
                    self.width,
                    num_attention_heads,
                    attention_head_dim,
                    num_attention_layers=motion_num_attention_layers,
                    ff_mult=motion_ff_mult,
                    norm_eps=norm_eps,
                    text_attention=motion_text_attention,
                    causal=motion_causal,
                )
            self.add_module(str(i), module)

    @classmethod
    def for_transformer(cls, config: Any, **layout: Any) -> MotionAdapter:
        """Fresh (identity) motion modules for a transformer with this config (its layout, or `layout`)."""
        keys = {k: layout.get(k, config.get(k)) for k in MOTION_CONFIG_KEYS}
        keys = {k: v for k, v in keys.items() if v is not None}
        return cls(
            num_layers=config["num_layers"],
            num_attention_heads=config["num_attention_heads"],
            attention_head_dim=config["attention_head_dim"],
            norm_eps=config["norm_eps"],
            **keys,
        )

    @property
    def layout(self) -> dict[str, Any]:
        return {k: self.config.get(k) for k in MOTION_CONFIG_KEYS}

    def set_causal(self, causal: bool) -> None:
        """Make the modules causal in time (or not) keeping their weights: a trained t2v model becomes the start of
        an autoregressive one."""
        if causal and self.inside_blocks:
            raise ValueError("motion_causal (autoregressive models) needs our motion modules, not upstream's")
        for module in self.children():
            module.causal = causal
        self.register_to_config(motion_causal=causal)

    @property
    def inside_blocks(self) -> bool:
        """Whether the modules run inside their blocks (upstream EasyAnimate's placement) instead of after."""
        return self.config.motion_module_mode == "easyanimate"

    def __len__(self) -> int:
        return len(self.kinds)

    def __getitem__(self, block: int | str) -> MotionModule:
        return self._modules[str(block)]

    def keys(self) -> list[str]:
        """The block indices holding a module, as strings (the state-dict names)."""
        return list(self._modules)

    def fits(self, config: Any) -> str | None:
        """Why these modules do not fit a transformer with `config` (None when they do)."""
        width = config["num_attention_heads"] * config["attention_head_dim"]
        if (self.width, self.config.num_layers) != (width, config["num_layers"]):
            return (
                f"motion modules for width {self.width} x {self.config.num_layers} blocks; "
                f"this transformer is {width} x {config['num_layers']}"
            )
        return None

    def save_folder(self, directory: str) -> str:
        """`save_pretrained` into `directory`, atomically: readers never see a half-written folder. Returns
        the weights file."""
        if not len(self):
            raise ValueError("this model has no motion modules to save (motion_module_mode='none')")
        write_replacing(directory, self.save_pretrained)
        return os.path.join(directory, SAFETENSORS_WEIGHTS_NAME)


def is_motion_adapter_folder(path: str) -> bool:
    """A folder `MotionAdapter.from_pretrained` reads (what `save_folder` writes)."""
    import json

    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        return False
    with open(config) as fh:
        return json.load(fh).get("_class_name") == MotionAdapter.__name__
