"""Position encodings shared by the video DiT's temporal layers."""

from __future__ import annotations

import torch
from diffusers.models.embeddings import get_timestep_embedding


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sin-cos encoding of integer positions (any length: computed, not tabulated).

    Returns `(len(positions), dim)` in float32. Uses diffusers' timestep embedding, which is the
    transformer sinusoid with cos first.
    """
    return get_timestep_embedding(positions.float(), dim, flip_sin_to_cos=True, downscale_freq_shift=0)
