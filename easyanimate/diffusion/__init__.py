"""The diffusion maths, apart from the models: objectives (noising, targets, loss weights) and the samplers
that match them. Below both training and the pipeline, so one place knows what a sampler needs for an
objective."""

from .objectives import OBJECTIVES, NoisedBatch, Objective
from .samplers import SAMPLERS, get_scheduler, objective_settings, prediction_type_of, swap_scheduler

__all__ = [
    "OBJECTIVES",
    "SAMPLERS",
    "NoisedBatch",
    "Objective",
    "get_scheduler",
    "objective_settings",
    "prediction_type_of",
    "swap_scheduler",
]
