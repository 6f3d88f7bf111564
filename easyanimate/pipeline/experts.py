"""Two denoising experts split by noise level, Wan 2.2's layout in diffusers' names: `transformer` denoises the
high-noise steps (timesteps at or above `boundary_ratio` x the sampler's train timesteps), where a video's layout
and motion are decided, and `transformer_2` the low-noise rest, where shapes and detail are drawn.

Why the demo model has two: fine-tuning the whole DiT to follow the direction word (high-noise times, the caption
contrast term) erases shape detail learnt at lower noise, whatever the stage's settings; keeping the weights from
before that stage as the low-noise expert keeps both (measured in the demo model's card).

    python scripts/make_experts.py --high outputs/demo/t2v_motion/pipeline --low outputs/demo/t2v/pipeline \
        --boundary 0.95 --output outputs/demo/experts
"""

from __future__ import annotations

import torch

from ..models.replace import write_replacing
from .pipeline_easyanimate import EasyAnimatePipeline


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def make_experts(high: str, low: str, boundary_ratio: float, output: str) -> None:
    """Write a pipeline folder: `high`'s pipeline (its sampler, VAE, text encoder) with `low`'s transformer as
    `transformer_2`. Both pipelines must share the VAE and the text encoder (their latents and caption features
    are what both experts were trained on). The folder is replaced atomically."""
    pipe = EasyAnimatePipeline.from_pretrained(high, dtype=torch.float32)
    other = EasyAnimatePipeline.from_pretrained(low, dtype=torch.float32)
    for name in ("vae", "text_encoder"):
        if not _same_weights(getattr(pipe, name), getattr(other, name)):
            raise ValueError(f"{high} and {low} have different {name} weights: the experts must share them")
    for path, source in ((high, pipe), (low, other)):
        if getattr(source, "transformer_2", None) is not None:
            raise ValueError(f"{path} already has two experts: give pipelines with one transformer each")
    combined = EasyAnimatePipeline(
        **{k: v for k, v in pipe.components.items() if k != "transformer_2"},
        transformer_2=other.transformer,
        boundary_ratio=boundary_ratio,
    )
    write_replacing(output, combined.save_pretrained)
