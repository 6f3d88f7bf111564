"""Inference: the pipeline, samplers by name, conditioning, long videos."""

from ..diffusion.samplers import SAMPLERS, get_scheduler
from .pipeline_easyanimate import EasyAnimateOutput, EasyAnimatePipeline

__all__ = ["SAMPLERS", "EasyAnimateOutput", "EasyAnimatePipeline", "get_scheduler"]
