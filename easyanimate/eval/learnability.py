"""Can this model learn to follow a direction word? A four-clip overfit probe.

Four clips that differ only in their direction word (a red circle on gray moving left / right / up / down) are
encoded once; the whole transformer is fine-tuned on them with the flow objective, then scored two ways:
direction sensitivity (the loss at a high noise level with the true caption against the opposite direction
word: a model that ignores the word scores the same) and generation (each caption sampled, its motion read by
the shapes analyzer). The recipe's choices (time sampling, shift, steps) are arguments, so the probe tells
whether a choice lets the caption decide the motion, in about a minute on CPU.

    python -m easyanimate.eval learnability --model models/Diffusion_Transformer/EasyAnimate-demo --shift 5
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ..data.synthetic import Scene, render
from ..diffusion.objectives import Objective
from .sensitivity import caption_sensitivity
from .shapes import read_video

DIRECTIONS = ("left", "right", "up", "down")


PROBE_LOOKS = [("red", "circle", "gray"), ("blue", "square", "white"), ("green", "triangle", "black"),
               ("yellow", "square", "gray"), ("purple", "circle", "white"), ("orange", "triangle", "gray"),
               ("red", "square", "black"), ("blue", "triangle", "gray")]  # fmt: skip


def probe_clips(size: int = 64, frames: int = 9, count: int = 4) -> tuple[torch.Tensor, list[str]]:
    """`(count, 3, F, H, W)` clips in [-1, 1] and their captions: the four directions, for `count / 4` looks
    (colour, shape, background). Four clips differ only in their direction word."""
    if count % 4 or not 4 <= count <= 4 * len(PROBE_LOOKS):  # held-out looks come from the same list
        raise ValueError(f"count must be a multiple of 4 up to {4 * len(PROBE_LOOKS)}, got {count}")
    scenes = [Scene(s, c, d, b) for c, s, b in PROBE_LOOKS[: count // 4] for d in DIRECTIONS]
    clips = [render(s, size, frames, np.random.default_rng(0)) for s in scenes]
    pixels = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    return pixels, [s.caption() for s in scenes]


def direction_probe(
    pipe,
    steps: int = 120,
    objective: Objective | None = None,
    learning_rate: float = 5e-4,
    frames: int = 9,
    size: int = 64,
    sample_steps: int = 12,
    guidance_scale: float = 6.0,
    seeds: tuple[int, ...] = (0,),
    seed: int = 0,
    clips: int = 4,
    held_out: int = 0,
) -> dict[str, Any]:
    """Fine-tune a copy of `pipe.transformer` on the four probe clips and score it (the pipeline keeps its own
    weights). `objective`: the flow training choices under test (default: the pipeline's sampler's); `clips`:
    4 (one look) or more (several looks: does the word carry across colours, shapes and backgrounds?);
    `held_out`: looks after the trained ones, never trained on but generated and scored apart (does the word
    carry to a look the model never saw moving?)."""
    objective = objective or Objective.for_scheduler(pipe.scheduler)
    if objective.kind != "flow":
        raise ValueError(f"the probe trains a flow model; this objective is {objective.kind!r}")
    all_pixels, all_captions = probe_clips(size, frames, clips + 4 * held_out)
    with torch.no_grad():
        all_latents = pipe.vae.encode_latents(all_pixels).float()
        all_text, all_mask = pipe.encode_prompt(
            all_captions, do_classifier_free_guidance=False, device="cpu"
        )[:2]
    latents, text, mask, captions = (
        all_latents[:clips],
        all_text[:clips],
        all_mask[:clips],
        all_captions[:clips],
    )
    original = pipe.transformer
    model = copy.deepcopy(original).float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    patch = model.config.patch_size
    tokens = latents.shape[2] * (latents.shape[3] // patch) * (latents.shape[4] // patch)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        noise = torch.randn(latents.shape, generator=gen)
        noised = objective.noise(latents, noise, gen, tokens=tokens)
        pred = model(noised.model_input, noised.timesteps, text, encoder_attention_mask=mask).sample
        loss = objective.loss(pred[:, : latents.shape[1]], noised)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    scheduler = pipe.scheduler
    try:
        pipe.transformer, pipe.scheduler = model, objective.sampler()
        sensitivity = caption_sensitivity(pipe, list(latents), captions, fields=("direction",), levels=(0.9,))
        if held_out:
            held_sensitivity = caption_sensitivity(
                pipe, list(all_latents[clips:]), all_captions[clips:], fields=("direction",), levels=(0.9,)
            )
        read = []
        for caption in all_captions:
            for s in seeds:
                video = pipe(
                    caption, num_frames=frames, height=size, width=size, num_inference_steps=sample_steps,
                    guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(s), output_type="np",
                ).frames[0]  # fmt: skip
                read.append(read_video((video * 255).round().astype(np.uint8)).direction)
    finally:
        pipe.transformer, pipe.scheduler = original, scheduler
    wanted = [d for d in DIRECTIONS * (clips // 4 + held_out) for _ in seeds]
    right = [r == w for r, w in zip(read, wanted)]
    trained = clips * len(seeds)
    results = {
        "steps": steps,
        "final_loss": float(np.mean(losses[-10:])),
        "direction_sensitivity": sensitivity["direction"]["relative_increase"],
        "directions_read": read[:trained],
        "directions_right": sum(right[:trained]),
        "generated": trained,
    }
    if held_out:
        results |= {
            "held_out_sensitivity": held_sensitivity["direction"]["relative_increase"],
            "held_out_read": read[trained:],
            "held_out_right": sum(right[trained:]),
            "held_out_generated": len(read) - trained,
        }
    return results
