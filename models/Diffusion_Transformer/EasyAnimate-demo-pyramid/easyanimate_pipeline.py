# Lets diffusers' DiffusionPipeline.from_pretrained(<this folder>, trust_remote_code=True) load this
# folder with EasyAnimate's pipeline (pip install easyanimate); written by its save_pretrained.
from easyanimate.pipeline.pipeline_easyanimate import EasyAnimatePipeline  # noqa: F401
