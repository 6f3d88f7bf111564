"""Models: the video DiT, its motion modules, presets and the text encoder."""

from .motion_adapter import MotionAdapter
from .motion_module import MotionModule
from .presets import TRANSFORMER_PRESETS, build_transformer
from .slice_vae import VAE_PRESETS, SliceVAE, build_vae
from .transformer3d import VideoTransformer3DModel

__all__ = [
    "MotionAdapter",
    "MotionModule",
    "SliceVAE",
    "TRANSFORMER_PRESETS",
    "VAE_PRESETS",
    "VideoTransformer3DModel",
    "build_transformer",
    "build_vae",
]
