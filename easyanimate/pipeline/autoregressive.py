"""Frame-by-frame (or chunk-by-chunk) sampling for autoregressive (temporal-pyramid) models.

Latent frame i is denoised alone, from noise (at the coarsest stage's size with a spatial-pyramid sampler),
with the frames before it as clean history, compressed as the model was trained (`TemporalPyramid.compress`:
the last `window` frames, older ones at lower resolution). A chunked model denoises `present_count` frames at
once (the first chunk has no history). A start image's latent can be frame 0 (image-to-video), and any number of
frames can follow: the history window slides, so a video may be longer than the clips the model was trained on.
With two experts each step runs the one for its noise level (each keeps its own history cache).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..diffusion.temporal_pyramid import TemporalPyramid
from ..models.frame_sequence import FrameCache


def generate_autoregressive(
    pipe,
    temporal: TemporalPyramid,
    shape: tuple[int, int, int, int, int],
    text: tuple[torch.Tensor, torch.Tensor],
    guidance_scale: float,
    steps: int,
    stage_steps: list[int] | None,
    generator: torch.Generator | list[torch.Generator] | None,
    start: torch.Tensor | None = None,
    callback: Callable | None = None,
    callback_inputs: list[str] | None = None,
) -> torch.Tensor:
    """Scaled latents `(B, C, F, h, w)` for a video of `shape` = (B, C, latent frames, height px, width px).
    `text`: the guided text features and mask (unconditional half first when `guidance_scale` > 1); `start`:
    frame 0's latent `(B, C, h, w)`."""
    b, c, num_latent, height, width = shape
    s = pipe.vae.spatial_compression_ratio
    device = pipe._execution_device
    frame_shape = (b, c, height // s, width // s)
    p = pipe.transformer.config.patch_size
    tokens = (frame_shape[2] // p) * (frame_shape[3] // p)
    text_states, text_mask = text
    step_kwargs = {"generator": generator} if pipe.pyramid is not None else {}
    frames: list[torch.Tensor] = [] if start is None else [start.to(device, torch.float32)]
    counter = 0
    chunks = chunk_sizes(temporal, len(frames), num_latent)
    total = len(chunks) * _steps_per_frame(pipe, steps, stage_steps, device, tokens)
    with pipe.progress_bar(total=total) as bar:
        for n in chunks:
            history = temporal.compress(frames)
            timesteps = pipe._timesteps(steps, 1.0, device, tokens, stage_steps)
            shape = frame_shape if temporal.chunk == 1 else (b, c, n, *frame_shape[2:])
            init = pipe.scheduler.initial_shape(shape) if pipe.pyramid is not None else shape
            z = randn_tensor(init, generator=generator, device=device, dtype=torch.float32)
            z = z * getattr(pipe.scheduler, "init_noise_sigma", 1.0)
            # per expert: the history runs once for all of this chunk's steps
            caches: dict[int, FrameCache] = {}
            for t in timesteps:
                pred = _predict(pipe, history, z, t, text_states, text_mask, guidance_scale, caches)
                z = pipe.scheduler.step(pred, t, z, return_dict=False, **step_kwargs)[0]
                if callback is not None:
                    values = {"latents": z}
                    returned = callback(
                        pipe, counter, t, {k: values[k] for k in callback_inputs if k in values}
                    )
                    z = (returned or {}).get("latents", z)
                counter += 1
                bar.update()
            frames.extend(z.unbind(2) if z.ndim == 5 else [z])
    return torch.stack(frames, 2)


def chunk_sizes(temporal: TemporalPyramid, done: int, total: int) -> list[int]:
    """The number of frames each remaining chunk denoises, from `done` generated frames to `total`."""
    sizes = []
    while done < total:
        sizes.append(min(temporal.present_count(done), total - done))
        done += sizes[-1]
    return sizes


def _steps_per_frame(pipe, steps: int, stage_steps: list[int] | None, device, tokens: int) -> int:
    return len(pipe._timesteps(steps, 1.0, device, tokens, stage_steps))


def _predict(pipe, history, z, t, text, text_mask, guidance_scale: float, caches=None) -> torch.Tensor:
    """The velocity / noise for the present frame `z` (or chunk, 5D) given the history, with classifier-free
    guidance (the history is the same for both halves: guidance steers the present frames only). `caches`: a
    `FrameCache` per expert, filled as needed."""
    model = pipe.expert_for(t)
    dtype = model.dtype
    frames = [*history, z]
    if hasattr(pipe.scheduler, "scale_model_input"):
        frames[-1] = pipe.scheduler.scale_model_input(z, t)
    if guidance_scale > 1:
        frames = [torch.cat([x, x]) for x in frames]
    present = z.shape[2] if z.ndim == 5 else 1
    levels = torch.zeros(frames[0].shape[0], len(history) + present, device=z.device)
    levels[:, len(history) :] = t
    frames = [x.to(dtype) for x in frames]
    cache = None if caches is None else caches.setdefault(id(model), FrameCache())
    out = model(frames, levels, text, encoder_attention_mask=text_mask, frame_cache=cache).sample
    return pipe._guided(out, guidance_scale)
