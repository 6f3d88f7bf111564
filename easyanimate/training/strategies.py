"""What each training mode trains, feeds and saves; the loop in `trainer.py` is the same for all.

- t2i: images only; the whole DiT but its motion modules.
- t2v: EasyAnimate's stages. 1: adapt the DiT on images (as t2i); 2: motion modules only, on videos (an
  image has no motion: the 1-frame path skips the motion modules); 3: the whole DiT on images and videos.
- lora: peft LoRA on the spatial attention (motion modules excluded unless asked); base frozen.
- motion_lora: LoRA on the motion modules' attention only (AnimateDiff's MotionLoRA), on videos.
- inpaint: image-to-video InP transformer (input widened to 2C + 1), inputs masked by the mask generator.
`trainable_prefixes` / `frozen_prefixes` in the config override the defaults by parameter-name prefix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..data.masks import MaskConfig, sample_mask
from ..pipeline.conditioning import inpaint_latents

MODES = ("t2i", "t2v", "lora", "motion_lora", "inpaint")
SPATIAL_ATTENTION = r"transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)"
MOTION_ATTENTION = r"motion_modules\.\d+\.attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)"


@dataclass
class Strategy:
    mode: str
    data: str  # which records train: "image", "video" or "both"
    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    lora_targets: str | None = None


def strategy_for(mode: str, t2v_stage: int = 2, lora_motion_modules: bool = False) -> Strategy:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "t2i" or (mode == "t2v" and t2v_stage == 1):
        return Strategy(mode, "image", ("",), ("motion_modules.",))
    if mode == "t2v":
        if t2v_stage not in (2, 3):
            raise ValueError(f"t2v_stage must be 1, 2 or 3, got {t2v_stage}")
        if t2v_stage == 2:
            return Strategy(mode, "video", ("motion_modules.",), ())
        return Strategy(mode, "both", ("",), ())
    if mode == "lora":
        targets = f"({SPATIAL_ATTENTION}|{MOTION_ATTENTION})" if lora_motion_modules else SPATIAL_ATTENTION
        return Strategy(mode, "both", (), (), targets)
    if mode == "motion_lora":
        return Strategy(mode, "video", (), (), MOTION_ATTENTION)
    return Strategy(mode, "both", ("",), ())


def select_trainable(
    transformer, strategy: Strategy, lora_rank: int, lora_alpha: float
) -> list[torch.nn.Parameter]:
    """Freeze everything, then open what the strategy trains; returns the trainable parameters."""
    transformer.requires_grad_(False)
    if strategy.lora_targets is not None:
        from peft import LoraConfig

        config = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, target_modules=strategy.lora_targets)
        transformer.add_adapter(config)  # peft makes only the LoRA weights trainable
    else:
        for name, param in transformer.named_parameters():
            if name.startswith(strategy.trainable) and not name.startswith(strategy.frozen):
                param.requires_grad_(True)
    params = [p for p in transformer.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"mode {strategy.mode!r} found nothing to train (check the prefixes / LoRA targets)")
    return params


@torch.no_grad()
def inpaint_condition(vae, pixels: torch.Tensor, rng: np.random.Generator, masks: MaskConfig) -> torch.Tensor:
    """Per sample: a generated mask, then `[mask at latent size, VAE latents of the masked video]`."""
    b, _, f, h, w = pixels.shape
    pixel_masks = torch.stack([sample_mask(f, h, w, rng, masks)[0] for _ in range(b)]).to(pixels)
    return torch.cat(inpaint_latents(vae, pixels, pixel_masks), dim=1)  # the pipeline's own conditioning


def save_lora(transformer, output_dir: str, name: str = "lora.safetensors") -> str:
    transformer.save_lora_adapter(output_dir, weight_name=name)
    return os.path.join(output_dir, name)
