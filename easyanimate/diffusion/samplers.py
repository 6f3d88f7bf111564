"""Samplers by name, mapped to diffusers schedulers configured for the model's objective.

    get_scheduler("DPM++", prediction_type="v_prediction", zero_terminal_snr=True)
    get_scheduler("Flow", "flow", shift=3.0)          # flow matching (rectified flow) models
    get_scheduler("Pyramid", "flow", pyramid=PyramidSchedule(3))  # spatial-pyramid flow models
    swap_scheduler(pipe.scheduler, "DDIM")             # another sampler for the same model

Diffusion models (epsilon / v_prediction) use PixArt's training schedule (linear betas 1e-4..2e-2, 1000
steps); flow models use FlowMatchEulerDiscreteScheduler. A sampler that does not fit the model's objective
is refused: the samples would be noise. `get_scheduler` is the one place that knows what an objective needs
of a sampler (zero terminal SNR: rescaled betas and "trailing" timesteps, so sampling starts from pure noise);
`swap_scheduler` reads those choices back from the current scheduler and builds the new one through it.
"""

from __future__ import annotations

import json
import os
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

from .pyramid import PyramidSchedule
from .pyramid_sampler import PyramidFlowScheduler

SAMPLERS: dict[str, type] = {
    "Euler": EulerDiscreteScheduler,
    "Euler A": EulerAncestralDiscreteScheduler,
    "DPM++": DPMSolverMultistepScheduler,
    "PNDM": PNDMScheduler,
    "DDIM": DDIMScheduler,
    "UniPC": UniPCMultistepScheduler,
    "Flow": FlowMatchEulerDiscreteScheduler,
    "Pyramid": PyramidFlowScheduler,
}
FLOW_SAMPLERS = ("Flow", "Pyramid")  # "Pyramid": spatial-pyramid flow models only (their stage layout)
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
# the training schedule a swap carries over (the objective's own choices are read by objective_settings)
_SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
_FLOW_SCHEDULE_KEYS = (
    "num_train_timesteps", "use_dynamic_shifting", "base_shift", "max_shift", "base_image_seq_len",
    "max_image_seq_len",
)  # fmt: skip


def prediction_type_of(scheduler: SchedulerMixin) -> str:
    if isinstance(scheduler, (FlowMatchEulerDiscreteScheduler, PyramidFlowScheduler)):
        return "flow"
    return scheduler.config.get("prediction_type", "epsilon")


def objective_settings(scheduler: SchedulerMixin) -> dict[str, Any]:
    """What the model's objective asked of this scheduler: prediction type, zero terminal SNR, flow shift."""
    ptype = prediction_type_of(scheduler)
    if isinstance(scheduler, PyramidFlowScheduler):
        return {"prediction_type": ptype, "pyramid": scheduler.schedule}
    if ptype == "flow":
        return {"prediction_type": ptype, "shift": scheduler.config.get("shift", 1.0)}
    return {
        "prediction_type": ptype,
        "zero_terminal_snr": bool(scheduler.config.get("rescale_betas_zero_snr", False)),
    }


def get_scheduler(
    name: str,
    prediction_type: str = "epsilon",
    *,
    zero_terminal_snr: bool = False,
    shift: float = 1.0,
    pyramid: PyramidSchedule | None = None,
    **schedule: Any,
) -> SchedulerMixin:
    """A fresh scheduler for sampler `name` fitting a model trained with this objective.

    `schedule`: training-schedule overrides (betas, number of train timesteps). `pyramid`: the stage layout of a
    spatial-pyramid flow model (its only sampler is "Pyramid"). Unknown names list the valid ones; a sampler
    that cannot serve the objective is refused with the reason.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {list(SAMPLERS)}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    if (name in FLOW_SAMPLERS) != (prediction_type == "flow"):
        raise ValueError(
            f"sampler {name!r} does not fit a {prediction_type!r} model: flow-matching models take 'Flow' "
            "(spatial-pyramid ones 'Pyramid'), "
            f"diffusion models take {[n for n in SAMPLERS if n not in FLOW_SAMPLERS]}"
        )
    if (name == "Pyramid") != (pyramid is not None):
        raise ValueError(
            "a spatial-pyramid flow model samples with 'Pyramid' only"
            if pyramid is not None
            else "sampler 'Pyramid' serves spatial-pyramid flow models only (their stage layout); use 'Flow'"
        )
    if pyramid is not None:
        return PyramidFlowScheduler(
            num_train_timesteps=schedule.get("num_train_timesteps", 1000),
            stages=pyramid.stages,
            boundaries=list(pyramid.boundaries),
        )
    cls = SAMPLERS[name]
    if name == "Flow":
        return cls(**{"num_train_timesteps": 1000, **schedule, "shift": shift})
    config = {**DIFFUSION_DEFAULTS, **_EXTRA.get(name, {}), "prediction_type": prediction_type, **schedule}
    if zero_terminal_snr:
        if name == "PNDM":  # diffusers' PNDM cannot rescale its betas, and diverges at alpha_T = 0
            raise ValueError(
                "sampler 'PNDM' does not support zero-terminal-SNR models; choose from "
                f"{[n for n in SAMPLERS if n not in ('Flow', 'PNDM')]}"
            )
        # zero terminal SNR (Lin et al. 2024): the last train step is pure noise, and sampling must start there
        config.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return cls(**config)


def swap_scheduler(current: SchedulerMixin, name: str) -> SchedulerMixin:
    """The sampler `name` for the same model as `current`: its objective choices and training schedule."""
    settings = objective_settings(current)
    keys = _FLOW_SCHEDULE_KEYS if settings["prediction_type"] == "flow" else _SCHEDULE_KEYS
    schedule = {k: current.config[k] for k in keys if k in current.config}
    return get_scheduler(name, **settings, **schedule)


def samplers_for(scheduler: SchedulerMixin) -> list[str]:
    """The sampler names that serve the model this scheduler was saved with (its objective's)."""
    settings = objective_settings(scheduler)
    if "pyramid" in settings:
        return ["Pyramid"]
    if settings["prediction_type"] == "flow":
        return ["Flow"]
    refused = {*FLOW_SAMPLERS, "PNDM"} if settings.get("zero_terminal_snr") else set(FLOW_SAMPLERS)
    return [n for n in SAMPLERS if n not in refused]


def sampler_name(scheduler: SchedulerMixin) -> str:
    """The name of this scheduler's sampler (the model's own default), or the first that serves its model."""
    for name, cls in SAMPLERS.items():
        if type(scheduler) is cls:
            return name
    return samplers_for(scheduler)[0]


def load_scheduler(pipeline_folder: str) -> SchedulerMixin:
    """A pipeline folder's scheduler, from its config alone (no weights)."""
    import diffusers

    folder = os.path.join(pipeline_folder, "scheduler")
    with open(os.path.join(folder, "scheduler_config.json")) as fh:
        class_name = json.load(fh)["_class_name"]
    if class_name == PyramidFlowScheduler.__name__:  # ours, not diffusers'
        return PyramidFlowScheduler.from_pretrained(folder)
    return getattr(diffusers, class_name).from_pretrained(folder)
