"""EasyAnimate: train and run diffusion-transformer video generators."""

__version__ = "0.1.0"
