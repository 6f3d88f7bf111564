"""The diffusion maths: objectives and the samplers that fit them (easyanimate/diffusion)."""

from __future__ import annotations

import pytest
import torch

from easyanimate.diffusion import SAMPLERS, Objective, get_scheduler, swap_scheduler

OBJECTIVE_CHOICES = [("epsilon", False), ("epsilon", True), ("v_prediction", False), ("v_prediction", True)]


def _timesteps(scheduler, steps: int = 10) -> torch.Tensor:
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.clone()


@pytest.mark.parametrize(("kind", "zero_snr"), OBJECTIVE_CHOICES)
@pytest.mark.parametrize("start", [n for n in SAMPLERS if n not in ("Flow", "PNDM")])
def test_swapped_sampler_keeps_the_objectives_timesteps(kind, zero_snr, start):
    """Swapping sampler (CLI --sampler, the UI dropdown) gives what a scheduler built for the objective gives:
    on a zero-terminal-SNR model the trailing spacing survives, so every sampler starts at t=999 (pure noise)."""
    objective = Objective(kind, zero_terminal_snr=zero_snr)
    current = objective.sampler(start)
    for name in SAMPLERS:
        if name == "Flow":
            with pytest.raises(ValueError, match="does not fit"):
                swap_scheduler(current, name)
            continue
        if zero_snr and name == "PNDM":
            with pytest.raises(ValueError, match="does not support zero-terminal-SNR"):
                objective.sampler(name)
            with pytest.raises(ValueError, match="does not support zero-terminal-SNR"):
                swap_scheduler(current, name)
            continue
        swapped, direct = swap_scheduler(current, name), objective.sampler(name)
        assert type(swapped) is type(direct) is SAMPLERS[name]
        assert torch.equal(_timesteps(swapped), _timesteps(direct)), name
        assert torch.equal(swapped.alphas_cumprod, direct.alphas_cumprod), name
        if zero_snr:
            assert _timesteps(swapped)[0] == 999 and swapped.alphas_cumprod[-1] < 1e-6, name


def test_flow_swap_keeps_the_shift():
    objective = Objective("flow", flow_shift=3.0)
    swapped = swap_scheduler(objective.sampler(), "Flow")
    assert torch.equal(_timesteps(swapped), _timesteps(get_scheduler("Flow", "flow", shift=3.0)))
    assert Objective.for_scheduler(swapped).flow_shift == 3.0
    with pytest.raises(ValueError, match="does not fit a 'flow' model"):
        swap_scheduler(swapped, "DDIM")
