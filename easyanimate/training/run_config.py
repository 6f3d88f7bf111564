"""The typed config of a DiT training run (`scripts/train.py --config config/train_*.yaml key=value ...`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.formats import FORMATS
from ..diffusion.objectives import OBJECTIVES
from .strategies import MODES


@dataclass
class DataConfig:
    format: str = "normal"  # normal | webvid | diffusers
    meta: str | None = None  # metadata file (normal, webvid)
    root: str | None = None  # dataset root (relative paths, webvid videos, diffusers folder)
    base_size: int = 256  # bucket area base (pixels)
    num_frames: int = 17  # 1 + 4k, when token_length is off
    token_length: bool = False  # frames per bucket from the pixel-volume budget
    token_base_frames: int = 49  # budget: base_size^2 x token_base_frames
    max_frames: int | None = None
    frame_stride: int = 1
    random_crop: bool = True  # False: centre crops and centred frame windows (what a latent cache holds)
    batch_size: int = 2
    num_workers: int = 0
    caption_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"data.format must be one of {FORMATS}, got {self.format!r}")
        if (self.num_frames - 1) % 4:
            raise ValueError(f"data.num_frames must be 1 + 4k, got {self.num_frames}")


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: float = 8.0
    include_motion_modules: bool = False  # lora mode: also adapt the motion modules' attention


@dataclass
class TrainConfig:
    output_dir: str = "outputs/train"
    mode: str = "t2v"  # t2i | t2v | lora | motion_lora | inpaint
    t2v_stage: int = 2  # 1 images (DiT), 2 motion modules, 3 whole DiT
    pipeline: str = (
        "models/Diffusion_Transformer/EasyAnimate-demo"  # vae/, text_encoder/, tokenizer/ (+ transformer/)
    )
    transformer: str | None = None  # preset name, PixArt folder or our transformer folder; None: pipeline's
    transformer_options: dict[str, Any] = field(default_factory=dict)  # e.g. motion_module_mode: hybrid
    trainable_prefixes: list[str] | None = None  # override the mode's choice by parameter-name prefix
    frozen_prefixes: list[str] | None = None
    objective: str = "epsilon"  # epsilon | v_prediction | flow
    zero_terminal_snr: bool = False
    snr_gamma: float | None = None  # min-SNR weighting, e.g. 5.0
    flow_shift: float = 1.0
    max_text_length: int = 120
    cache_text_features: bool = True  # each caption encoded once per run (not when the encoder trains)
    train_text_encoder: bool = False  # t2i / t2v: train the (small) text encoder with the DiT
    latent_cache: str | None = None  # read VAE latents + text features made by scripts/precompute.py
    seed: int = 0
    max_steps: int = 1000
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant_with_warmup"  # any diffusers.optimization schedule name
    lr_warmup_steps: int = 0
    weight_decay: float = 0.01
    use_8bit_adam: bool = False
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool = False
    ema_decay: float | None = None  # e.g. 0.999; None: no EMA
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 3
    resume_from_checkpoint: str | None = None  # "latest" or a checkpoint folder
    validation_steps: int = 500
    validation_prompts: list[str] = field(
        default_factory=lambda: ["a red circle moving right on a gray background"]
    )
    validation_num_frames: int = 17
    validation_size: int | None = None  # pixels; None: data.base_size
    validation_inference_steps: int = 20
    validation_sampler: str | None = None  # None: the objective's default (DPM++, Flow for flow)
    log_steps: int = 10
    fps: int = 8
    log_sample_indices: bool = False  # each process appends the record indices it trained on (data audit)
    motion_module_export: str | None = (
        None  # also write the motion modules here (e.g. models/Motion_Module/x)
    )
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    masks: dict[str, float] | None = None  # inpaint mask probabilities by kind (data/masks.py defaults)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.train_text_encoder and self.mode not in ("t2i", "t2v"):
            raise ValueError(f"train_text_encoder applies to t2i and t2v, not mode {self.mode!r}")
