"""Inference: the pipeline, samplers by name, conditioning, long videos."""

from .pipeline_easyanimate import EasyAnimateOutput, EasyAnimatePipeline
from .schedulers import SAMPLERS, get_scheduler

__all__ = ["SAMPLERS", "EasyAnimateOutput", "EasyAnimatePipeline", "get_scheduler"]
