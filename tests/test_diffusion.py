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
@pytest.mark.parametrize("start", [n for n in SAMPLERS if n not in ("Flow", "Pyramid", "PNDM")])
def test_swapped_sampler_keeps_the_objectives_timesteps(kind, zero_snr, start):
    """Swapping sampler (CLI --sampler, the UI dropdown) gives what a scheduler built for the objective gives:
    on a zero-terminal-SNR model the trailing spacing survives, so every sampler starts at t=999 (pure noise)."""
    objective = Objective(kind, zero_terminal_snr=zero_snr)
    current = objective.sampler(start)
    for name in SAMPLERS:
        if name in ("Flow", "Pyramid"):
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


def test_token_count_shift_is_diffusers_dynamic_shifting_and_round_trips():
    """Training shifts its levels by exp(mu(tokens)); the saved sampler (use_dynamic_shifting + the same four
    numbers) gives the same sigmas for the same token count, and a swap or reload keeps them."""
    from easyanimate.diffusion.objectives import TokenShift, shift_levels

    ts = TokenShift(0.5, 1.6, 64, 2048)
    objective = Objective("flow", token_shift=ts)
    sampler = objective.sampler()
    plain = Objective("flow").sampler()
    plain.set_timesteps(12)
    for tokens in (64, 576, 2048):
        sampler.set_timesteps(12, mu=ts.mu(tokens))
        ours = shift_levels(plain.sigmas[:-1], ts.shift(tokens))
        assert torch.allclose(sampler.sigmas[:-1], ours, atol=1e-6)
    assert Objective.for_scheduler(swap_scheduler(sampler, "Flow")).token_shift == ts
    with pytest.raises(ValueError, match="not both"):
        Objective("flow", flow_shift=3.0, token_shift=ts)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.zeros(4096, 1), torch.ones(4096, 1)
    small = objective.noise(x0, noise, g, tokens=64).model_input.mean()
    large = objective.noise(x0, noise, torch.Generator().manual_seed(0), tokens=2048).model_input.mean()
    assert large > small + 0.1  # more tokens, noisier training levels


def test_time_sampling_modes_put_their_share_at_high_noise():
    """Logit-normal leaves about 4% of draws above 0.85, where layout and motion are decided; uniform 15%;
    high_noise about 32% (half its draws in [0.75, 1])."""
    shares = {}
    for mode in ("logit_normal", "uniform", "high_noise"):
        t = Objective("flow", time_sampling=mode).flow_times(200_000, torch.Generator().manual_seed(0))
        assert 0 < float(t.min()) and float(t.max()) < 1
        shares[mode] = float((t > 0.85).float().mean())
    assert 0.03 < shares["logit_normal"] < 0.05 and 0.14 < shares["uniform"] < 0.16
    assert 0.30 < shares["high_noise"] < 0.34
    with pytest.raises(ValueError, match="time_sampling must be one of"):
        Objective("flow", time_sampling="beta")


def test_a_saved_token_shift_is_what_sampling_uses(tmp_path):
    """A pipeline folder whose flow sampler was saved with a token-count shift samples at the shift of the
    request's own token count (latent frames x patches), read back from the folder."""
    from conftest import make_pipeline

    from easyanimate.diffusion.objectives import TokenShift, shift_levels
    from easyanimate.pipeline.loading import load_pipeline

    folder = make_pipeline(tmp_path / "flow", sampler="Flow", prediction_type="flow")
    ts = TokenShift(0.5, 1.6, 16, 1024)
    Objective("flow", token_shift=ts).sampler().save_pretrained(tmp_path / "flow" / "scheduler")
    pipe = load_pipeline(folder, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    plain = Objective("flow").sampler()
    plain.set_timesteps(3)
    for size, frames in ((32, 5), (64, 9)):
        pipe(
            "a red circle",
            num_frames=frames,
            height=size,
            width=size,
            num_inference_steps=3,
            output_type="latent",
        )
        tokens = (1 + (frames - 1) // 4) * (size // 16) ** 2  # tiny VAE 8x / 4x, patch 2
        assert torch.allclose(pipe.scheduler.sigmas[:-1], shift_levels(plain.sigmas[:-1], ts.shift(tokens)))
