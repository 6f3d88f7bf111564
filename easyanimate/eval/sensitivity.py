"""Caption sensitivity: does the model use a caption word at all?

For real clips with known captions, the model's denoising loss is measured with the true caption and with one
attribute word swapped ("moving left" -> "moving right"), at fixed noise levels and with the same noise. A model
that ignores the word scores the same loss both ways (relative increase 0); one that uses it does worse with
the wrong word. This tells "the model never learnt to read the direction" apart from "it reads it but cannot
draw it", which generation accuracy alone cannot.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.caption_swap import SWAPS, swap_word
from ..diffusion.objectives import Objective
from ..diffusion.temporal_pyramid import temporal_pyramid_of


@torch.no_grad()
def caption_sensitivity(
    pipe,
    latents: Sequence[torch.Tensor],
    captions: Sequence[str],
    fields: Sequence[str] = ("color", "shape", "direction"),
    levels: Sequence[float] = (0.6, 0.9),
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Per field: mean loss with the true and the swapped caption, and the relative increase.

    `latents`: `(C, F, H, W)` scaled VAE latents of the clips (what the transformer denoises); `captions`: one
    per clip. Clips whose caption has no word of a field are left out of that field (`n` counts the rest).
    """
    unknown = set(fields) - set(SWAPS)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; choose from {sorted(SWAPS)}")
    transformer = pipe.transformer
    device, dtype = transformer.device, transformer.dtype
    channels = latents[0].shape[0]
    gen = torch.Generator().manual_seed(seed)
    # noising as in training (pyramid stages, frame-by-frame history), at fixed levels
    objective = Objective.for_scheduler(pipe.scheduler).autoregressive(
        temporal_pyramid_of(transformer.config)
    )

    # each caption is encoded once, whatever the field / level
    encoded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def loss(noised, caption):
        if caption not in encoded:
            encoded[caption] = pipe.encode_prompt(
                [caption], do_classifier_free_guidance=False, device=device
            )[:2]
        feats, mask = encoded[caption]
        x_t, t = noised.model_input, noised.timesteps
        pred = transformer(x_t, t, feats, encoder_attention_mask=mask).sample[:, :channels]
        return float((pred.float() - noised.target.float()).pow(2).mean())

    out: dict[str, dict[str, float]] = {}
    for field in fields:
        true, swapped = [], []
        for x0, caption in zip(latents, captions):
            wrong = swap_word(caption, SWAPS[field])
            if wrong is None:
                continue
            x0 = x0[None].to(device, dtype)
            for level in levels:
                noise = torch.randn(x0.shape, generator=gen).to(device, dtype)
                noised = objective.noise_fixed(x0, noise, level)
                true.append(loss(noised, caption))
                swapped.append(loss(noised, wrong))
        if not true:
            out[field] = {"n": 0}
            continue
        lt, ls = sum(true) / len(true), sum(swapped) / len(swapped)
        out[field] = {
            "loss_true_caption": lt,
            "loss_swapped_caption": ls,
            "relative_increase": (ls - lt) / lt,
            "n": len(true) // len(levels),
        }
    return out
