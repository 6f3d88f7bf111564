"""The typed config of a Slice VAE training run (YAML in config/vae/, overrides on the command line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...config import check_bounds
from ...models.slice_vae import preset_shape_rule
from ..scaffold import OPTIMIZATION_BOUNDS, REPORT_TO


@dataclass
class VAEDataConfig:
    root: str = "datasets/demo"  # a folder of videos and/or images
    num_frames: int = 17  # 1 + rk for the VAE's temporal ratio r (4; the demo preset's 2)
    size: int = 64  # square crops, a multiple of the VAE's spatial ratio
    frame_stride: int = 1
    batch_size: int = 1
    image_ratio: float = 0.25  # share of steps that train on single images
    num_workers: int = 0


@dataclass
class VAELossConfig:
    kl_weight: float = 1e-6
    l2_weight: float = 0.0  # adds MSE to L1: large errors (small objects on flat backgrounds) weigh more
    perceptual_weights: str | None = None  # local torchvision-format vgg16 weights; None: no perceptual loss
    perceptual_weight: float = 0.1
    disc_start: int | None = None  # step at which the adversarial loss starts; None: no discriminator
    disc_weight: float = 0.05
    disc_learning_rate: float = 1e-4
    disc_channels: int = 32


@dataclass
class VAETrainConfig:
    output_dir: str = "outputs/vae"
    stage: int = 1  # 1: encoder + decoder; 2: decoder only (encoder frozen and verified)
    model: str = "tiny"  # a VAE preset name, or a SliceVAE / AutoencoderKLMagvit folder
    model_options: dict[str, Any] = field(default_factory=dict)  # preset overrides, e.g. latent_channels: 8
    seed: int = 0
    max_steps: int = 1000
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"
    gradient_checkpointing: bool = False
    encode_slice_frames: int = 8
    decode_slice_latents: int = 2
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 3
    resume_from_checkpoint: str | None = None  # "latest" or a checkpoint folder
    overwrite: bool = False  # allow a fresh run into an output_dir that holds another run (else refused)
    validation_steps: int = 500
    log_steps: int = 10  # log the training scalars every this many steps
    report_to: str = "tensorboard"  # tensorboard | wandb (pip install wandb) | none
    fps: int = 8
    data: VAEDataConfig = field(default_factory=VAEDataConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)

    def __post_init__(self) -> None:
        if self.report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {REPORT_TO}, got {self.report_to!r}")
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        check_bounds(
            self,
            **OPTIMIZATION_BOUNDS,
            encode_slice_frames=(1, None),
            decode_slice_latents=(1, None),
            checkpointing_steps=(0, None),
            checkpoints_total_limit=(0, None),
            validation_steps=(0, None),
            log_steps=(1, None),
            fps=(1, None),
        )
        check_bounds(self.data, batch_size=(1, None), image_ratio=(0.0, 1.0))
        rule = preset_shape_rule(self.model)  # a folder's rule is checked when the trainer loads it
        if rule is not None:
            rule.check_frames(self.data.num_frames, "data.num_frames")
