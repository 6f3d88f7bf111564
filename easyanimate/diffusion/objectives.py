"""Training objectives: epsilon, v-prediction (optionally zero terminal SNR) and flow matching.

Each turns clean latents, noise and a per-sample random draw into (model input, timestep for the model,
target, loss weight). The matching samplers: epsilon / v -> any diffusion sampler configured with the same
`prediction_type` and betas; flow -> "Flow" (FlowMatchEulerDiscreteScheduler, velocity = noise - x0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from .samplers import DIFFUSION_DEFAULTS, get_scheduler, objective_settings

OBJECTIVES = ("epsilon", "v_prediction", "flow")


@dataclass
class NoisedBatch:
    model_input: torch.Tensor
    timesteps: torch.Tensor  # what the transformer sees (0..1000)
    target: torch.Tensor
    weight: torch.Tensor  # per sample


class Objective:
    def __init__(
        self,
        kind: str,
        zero_terminal_snr: bool = False,
        snr_gamma: float | None = None,
        flow_shift: float = 1.0,
    ):
        if kind not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {kind!r}")
        self.kind, self.snr_gamma, self.flow_shift = kind, snr_gamma, flow_shift
        self.zero_terminal_snr = zero_terminal_snr
        if kind != "flow":
            self.scheduler = DDPMScheduler(
                **DIFFUSION_DEFAULTS, prediction_type=kind, rescale_betas_zero_snr=zero_terminal_snr
            )

    @classmethod
    def for_scheduler(cls, scheduler) -> Objective:
        """The objective a pipeline's sampler was made for (its prediction type, zero-SNR choice, shift)."""
        settings = objective_settings(scheduler)
        return cls(
            settings["prediction_type"],
            zero_terminal_snr=settings.get("zero_terminal_snr", False),
            flow_shift=settings.get("shift", 1.0),
        )

    @property
    def default_sampler(self) -> str:
        return "Flow" if self.kind == "flow" else "DPM++"

    def sampler(self, name: str | None = None):
        """Sampler `name` (None: this objective's default) configured for this objective: what validation
        and the saved pipeline use."""
        name = name or self.default_sampler
        if self.kind == "flow":
            return get_scheduler(name, "flow", shift=self.flow_shift)
        return get_scheduler(name, self.kind, zero_terminal_snr=self.zero_terminal_snr)

    def noise(self, x0: torch.Tensor, noise: torch.Tensor, generator: torch.Generator) -> NoisedBatch:
        """Noised at random levels: logit-normal (then shifted) for flow, uniform timesteps otherwise."""
        b = x0.shape[0]
        if self.kind == "flow":
            s = torch.sigmoid(torch.randn(b, generator=generator, device=x0.device))  # logit-normal times
            level = self.flow_shift * s / (1 + (self.flow_shift - 1) * s)  # resolution shift
        else:
            steps = self.scheduler.config.num_train_timesteps
            t = torch.randint(0, steps, (b,), generator=generator, device=x0.device)
            level = t / (steps - 1)
        return self.noise_at(x0, noise, level)

    def noise_at(self, x0: torch.Tensor, noise: torch.Tensor, level: torch.Tensor) -> NoisedBatch:
        """Noised at given levels `(B,)` in [0, 1]: the flow sigma, or timestep / (steps - 1) for diffusion."""
        b = x0.shape[0]
        level = torch.as_tensor(level, device=x0.device).float().expand(b)
        if self.kind == "flow":
            view = level.view(b, *([1] * (x0.ndim - 1))).to(x0.dtype)
            return NoisedBatch(
                (1 - view) * x0 + view * noise, level * 1000, noise - x0, torch.ones(b, device=x0.device)
            )
        sched = self.scheduler
        t = (level * (sched.config.num_train_timesteps - 1)).round().long()
        noisy = sched.add_noise(x0, noise, t)
        target = noise if self.kind == "epsilon" else sched.get_velocity(x0, noise, t)
        weight = torch.ones(b, device=x0.device)
        if self.snr_gamma is not None:  # min-SNR weighting (Hang et al. 2023)
            snr = compute_snr(sched, t).to(x0.device)
            clipped = torch.minimum(snr, torch.full_like(snr, self.snr_gamma))
            weight = clipped / snr if self.kind == "epsilon" else clipped / (snr + 1)
        return NoisedBatch(noisy, t, target, weight)

    def loss(self, prediction: torch.Tensor, batch: NoisedBatch) -> torch.Tensor:
        per_sample = (prediction.float() - batch.target.float()).pow(2).flatten(1).mean(1)
        return (per_sample * batch.weight).mean()
