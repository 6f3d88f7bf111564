"""Per-step randomness as a pure function of (seed, step, rank): resumed runs repeat it exactly."""

from __future__ import annotations

import numpy as np
import torch


def step_generator(seed: int, step: int, rank: int, device: torch.device | str = "cpu") -> torch.Generator:
    value = int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(value)
