"""Samplers by name, mapped to diffusers schedulers configured for the model's prediction type.

    get_scheduler("DPM++", prediction_type="v_prediction")
    get_scheduler("Flow")                      # flow matching (rectified flow) models

Diffusion models (epsilon / v_prediction) use PixArt's training schedule (linear betas 1e-4..2e-2, 1000
steps); flow models use FlowMatchEulerDiscreteScheduler. A sampler that does not match the model's objective
is refused: the samples would be noise.
"""

from __future__ import annotations

from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

SAMPLERS: dict[str, type] = {
    "Euler": EulerDiscreteScheduler,
    "Euler A": EulerAncestralDiscreteScheduler,
    "DPM++": DPMSolverMultistepScheduler,
    "PNDM": PNDMScheduler,
    "DDIM": DDIMScheduler,
    "UniPC": UniPCMultistepScheduler,
    "Flow": FlowMatchEulerDiscreteScheduler,
}
PREDICTION_TYPES = ("epsilon", "v_prediction", "flow")

DIFFUSION_DEFAULTS: dict[str, Any] = dict(
    num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear"
)
# extra settings per sampler (the rest are diffusers' defaults)
_EXTRA: dict[str, dict[str, Any]] = {
    "DPM++": dict(algorithm_type="dpmsolver++", solver_order=2),
    "PNDM": dict(skip_prk_steps=True),
    "DDIM": dict(clip_sample=False, set_alpha_to_one=False),
    "Euler": dict(timestep_spacing="trailing"),
    "Euler A": dict(timestep_spacing="trailing"),
}


def prediction_type_of(scheduler: SchedulerMixin) -> str:
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return "flow"
    return scheduler.config.get("prediction_type", "epsilon")


def get_scheduler(name: str, prediction_type: str = "epsilon", **overrides: Any) -> SchedulerMixin:
    """A fresh scheduler for sampler `name`; unknown names list the valid ones."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {list(SAMPLERS)}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    if (name == "Flow") != (prediction_type == "flow"):
        raise ValueError(
            f"sampler {name!r} does not fit a {prediction_type!r} model: flow-matching models take 'Flow', "
            f"diffusion models take {[n for n in SAMPLERS if n != 'Flow']}"
        )
    cls = SAMPLERS[name]
    if name == "Flow":
        return cls(**{"num_train_timesteps": 1000, "shift": 1.0, **overrides})
    config = {**DIFFUSION_DEFAULTS, **_EXTRA.get(name, {}), "prediction_type": prediction_type, **overrides}
    return cls(**config)


def swap_scheduler(current: SchedulerMixin, name: str) -> SchedulerMixin:
    """The sampler `name` with the training schedule of `current` (betas, shift, prediction type)."""
    ptype = prediction_type_of(current)
    keep = {k: v for k, v in current.config.items() if not k.startswith("_")}
    base = get_scheduler(name, ptype)
    accepted = set(base.config.keys())
    schedule = {k: v for k, v in keep.items() if k in accepted and k in _SCHEDULE_KEYS}
    return get_scheduler(name, ptype, **schedule)


_SCHEDULE_KEYS = {
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "rescale_betas_zero_snr",
    "shift",
    "use_dynamic_shifting",
}
