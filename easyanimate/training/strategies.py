"""What each training mode trains, feeds and saves; the loop in `trainer.py` is the same for all.

- t2i: images only; the whole DiT but its motion modules.
- t2v: EasyAnimate's stages. 1: adapt the DiT on images (as t2i); 2: motion modules only, on videos (an
  image has no motion: the 1-frame path skips the motion modules); 3: the whole DiT on images and videos.
- lora: peft LoRA on the spatial attention (motion modules excluded unless asked); base frozen.
- motion_lora: LoRA on the motion modules' attention only (AnimateDiff's MotionLoRA), on videos.
- inpaint: image-to-video InP transformer (input widened to 2C + 1), inputs masked by the mask generator.
`model.trainable_prefixes` / `model.frozen_prefixes` in the config override the defaults by parameter-name prefix.

A strategy answers every question whose answer differs per mode: which records, which parameters, how the
model is prepared, which extra model inputs a batch gets, whether a latent cache can feed it, what is exported.
Adding a mode is one new entry in `STRATEGIES`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..data.masks import MaskConfig, sample_mask
from ..pipeline.conditioning import inpaint_latents

SPATIAL_ATTENTION = r"transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
MOTION_ATTENTION = r"motion_modules\.\d+\.attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)"


@dataclass
class Strategy:
    """Full-weight training of the parameters named by prefix (t2i, t2v stages)."""

    mode: str
    data: str  # which records train: "image", "video" or "both"
    trainable: tuple[str, ...] = ("",)
    frozen: tuple[str, ...] = ()

    uses_pixels = False  # True: the model input needs the pixels themselves (no latent cache)
    exports_pipeline = True  # False: the product is an adapter file (LoRA) read from the whole model

    def with_prefixes(self, trainable: list[str] | None, frozen: list[str] | None) -> Strategy:
        if trainable is None and frozen is None:
            return self
        return dataclasses.replace(self, trainable=tuple(trainable or ()), frozen=tuple(frozen or ()))

    def prepare(self, transformer, vae) -> None:
        """Change the model before training starts (nothing, for most modes)."""

    def select_trainable(self, transformer, lora_rank: int, lora_alpha: float) -> list[torch.nn.Parameter]:
        """Freeze everything, then open what this mode trains; returns the trainable parameters."""
        transformer.requires_grad_(False)
        for name, param in transformer.named_parameters():
            if name.startswith(self.trainable) and not name.startswith(self.frozen):
                param.requires_grad_(True)
        return self._trainable(transformer)

    def _trainable(self, transformer) -> list[torch.nn.Parameter]:
        params = [p for p in transformer.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"mode {self.mode!r} found nothing to train (check the prefixes / LoRA targets)")
        return params

    def condition(
        self, vae, pixels: torch.Tensor | None, rng: np.random.Generator, masks: MaskConfig
    ) -> torch.Tensor | None:
        """Extra channels concatenated to the noisy latents (None: the model sees the latents alone)."""
        return None

    def save_for_inference(self, transformer, folder: str) -> str:
        """What a checkpoint adds so it serves inference as it is: `transformer/` (diffusers layout; load it with
        `predict_t2v.py --transformer <checkpoint>/transformer`)."""
        path = os.path.join(folder, "transformer")
        transformer.save_pretrained(path)
        return path

    def export(
        self,
        transformer,
        output_dir: str,
        save_pipeline: Callable[[str], None],
        motion_module_export: str | None = None,
    ) -> dict[str, str]:
        """The run's product: a pipeline folder, plus the motion modules alone when the model has them."""
        folder = os.path.join(output_dir, "pipeline")
        save_pipeline(folder)
        out = {"pipeline": folder}
        if len(transformer.motion_modules):
            out["motion_module"] = transformer.save_motion_modules(os.path.join(output_dir, "motion_module"))
            if motion_module_export:
                transformer.save_motion_modules(motion_module_export)
        return out


@dataclass
class LoraStrategy(Strategy):
    """peft LoRA on the attention layers matching `lora_targets`; the base stays frozen."""

    lora_targets: str = SPATIAL_ATTENTION
    exports_pipeline = False

    def select_trainable(self, transformer, lora_rank: int, lora_alpha: float) -> list[torch.nn.Parameter]:
        from peft import LoraConfig

        transformer.requires_grad_(False)
        config = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, target_modules=self.lora_targets)
        transformer.add_adapter(config)  # peft makes only the LoRA weights trainable
        return self._trainable(transformer)

    def export(self, transformer, output_dir: str, save_pipeline=None, motion_module_export=None):
        """A small LoRA safetensors file (the base is unchanged)."""
        return {"lora": save_lora(transformer, output_dir)}

    def save_for_inference(self, transformer, folder: str) -> str:
        """`lora.safetensors` (load it with `--lora <checkpoint>/lora.safetensors`)."""
        return save_lora(transformer, folder)


@dataclass
class InpaintStrategy(Strategy):
    """InP: input widened to `2C + 1` (noisy latents, latent mask, latents of the masked video)."""

    uses_pixels = (
        True  # masks are drawn on pixels and the masked video encoded: a latent cache cannot feed it
    )

    def prepare(self, transformer, vae) -> None:
        transformer.widen_inputs(2 * vae.config.latent_channels + 1)

    @torch.no_grad()
    def condition(
        self, vae, pixels: torch.Tensor | None, rng: np.random.Generator, masks: MaskConfig
    ) -> torch.Tensor:
        return inpaint_condition(vae, pixels, rng, masks)


def _t2v(stage: int, **_) -> Strategy:
    if stage == 1:
        return Strategy("t2v", "image", ("",), ("motion_modules.",))
    if stage == 2:
        return Strategy("t2v", "video", ("motion_modules.",), ())
    if stage == 3:
        return Strategy("t2v", "both", ("",), ())
    raise ValueError(f"t2v_stage must be 1, 2 or 3, got {stage}")


def _lora(stage: int, lora_motion_modules: bool = False) -> Strategy:
    targets = f"({SPATIAL_ATTENTION}|{MOTION_ATTENTION})" if lora_motion_modules else SPATIAL_ATTENTION
    return LoraStrategy("lora", "both", lora_targets=targets)


# mode -> factory(t2v_stage, lora_motion_modules)
STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "t2i": lambda stage, **_: Strategy("t2i", "image", ("",), ("motion_modules.",)),
    "t2v": _t2v,
    "lora": _lora,
    "motion_lora": lambda stage, **_: LoraStrategy("motion_lora", "video", lora_targets=MOTION_ATTENTION),
    "inpaint": lambda stage, **_: InpaintStrategy("inpaint", "both"),
}
MODES = tuple(STRATEGIES)


def strategy_for(mode: str, t2v_stage: int = 2, lora_motion_modules: bool = False) -> Strategy:
    if mode not in STRATEGIES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return STRATEGIES[mode](t2v_stage, lora_motion_modules=lora_motion_modules)


def strategy_of(cfg) -> Strategy:
    """The strategy of a `TrainConfig`, with its prefix overrides applied."""
    strategy = strategy_for(cfg.mode, cfg.t2v_stage, cfg.lora.include_motion_modules)
    return strategy.with_prefixes(cfg.model.trainable_prefixes, cfg.model.frozen_prefixes)


@torch.no_grad()
def inpaint_condition(vae, pixels: torch.Tensor, rng: np.random.Generator, masks: MaskConfig) -> torch.Tensor:
    """Per sample: a generated mask, then `[mask at latent size, VAE latents of the masked video]`."""
    b, _, f, h, w = pixels.shape
    pixel_masks = torch.stack([sample_mask(f, h, w, rng, masks)[0] for _ in range(b)]).to(pixels)
    return torch.cat(inpaint_latents(vae, pixels, pixel_masks), dim=1)  # the pipeline's own conditioning


def save_lora(transformer, output_dir: str, name: str = "lora.safetensors") -> str:
    transformer.save_lora_adapter(output_dir, weight_name=name)
    return os.path.join(output_dir, name)
