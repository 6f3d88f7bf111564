"""The typed config of a DiT training run (`scripts/train.py --config config/train_*.yaml key=value ...`).

One section per concern, as LTX-Video-Trainer lays its configs out: `model` (what is loaded and trained),
`objective`, `data`, `masks` (inpaint), `optimization`, `checkpointing`, `validation`, `logging`, `lora`, `contrast`.
Overrides are dotted: `optimization.max_steps=10 data.batch_size=4 validation.steps=0`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..config import check_bounds
from ..data.caption_swap import SWAPS
from ..data.formats import FORMATS
from ..data.masks import MaskConfig
from ..diffusion.objectives import OBJECTIVES, TIME_SAMPLING, Objective, TokenShift
from ..diffusion.pyramid import PyramidSchedule
from .scaffold import OPTIMIZATION_BOUNDS, REPORT_TO
from .strategies import MODES


@dataclass
class ModelConfig:
    pipeline: str = (
        "models/Diffusion_Transformer/EasyAnimate-demo"  # vae/, text_encoder/, tokenizer/ (+ transformer/)
    )
    transformer: str | None = None  # preset name, PixArt folder or our transformer folder; None: pipeline's
    transformer_options: dict[str, Any] = field(default_factory=dict)  # e.g. motion_module_mode: hybrid
    trainable_prefixes: list[str] | None = None  # override the mode's choice by parameter-name prefix
    frozen_prefixes: list[str] | None = (
        None  # keep these parameter-name prefixes frozen (with trainable_prefixes)
    )
    max_text_length: int = 120  # caption tokens (PixArt: 120)
    train_text_encoder: bool = False  # t2i / t2v: train the (small) text encoder with the DiT
    gradient_checkpointing: bool = False  # recompute block activations in backward (less memory, ~30% slower)
    motion_module_export: str | None = None  # also write the motion modules here (models/Motion_Module/x)

    @property
    def transformer_source(self) -> str:
        """What the run's transformer is loaded from: `transformer`, else the pipeline's `transformer/`."""
        return self.transformer or os.path.join(self.pipeline, "transformer")


@dataclass
class ObjectiveConfig:
    kind: str = "epsilon"  # epsilon | v_prediction | flow
    zero_terminal_snr: bool = False  # rescaled betas (Lin et al.): the last step is pure noise (v_prediction)
    snr_gamma: float | None = None  # min-SNR weighting, e.g. 5.0
    flow_shift: float = 1.0  # flow: shift of the training times (> 1: noisier); saved with the sampler
    time_sampling: str = "logit_normal"  # flow: logit_normal | uniform | high_noise (half in [0.75, 1])
    flow_token_shift: bool = False  # flow: shift by the token count instead (diffusers' dynamic shifting)
    flow_base_shift: float = 0.5  # flow_token_shift: log(shift) at flow_base_tokens
    flow_max_shift: float = 1.15  # flow_token_shift: log(shift) at flow_max_tokens (linear in between)
    flow_base_tokens: int = 256  # flow_token_shift: tokens (latent frames x patches) of flow_base_shift
    flow_max_tokens: int = 4096  # flow_token_shift: tokens of flow_max_shift
    pyramid_stages: int = 1  # flow: > 1 trains a spatial pyramid (stage k at 1/2^k size; 3 as Pyramid Flow)
    pyramid_boundaries: list[float] | None = (
        None  # pyramid: where stages 1..K-1 end (noise levels); None: k/K
    )
    pyramid_stage_weights: list[float] | None = (
        None  # pyramid: how often training draws stage k = 0 (full size) .. K-1 (coarsest); [0, 1]: coarse only
    )
    pyramid_stage_steps: list[int] | None = (
        None  # pyramid: the saved sampler's default steps per stage, coarsest first, e.g. [17, 8]; None: even
    )
    first_chunk_share: float = 0.5  # chunked models: share of draws forced to the 1st chunk (1: whole clips)
    history_noise: float = 0.0  # autoregressive models: history mixed with noise up to this level (0: clean)

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise ValueError(f"objective.kind must be one of {OBJECTIVES}, got {self.kind!r}")
        if self.time_sampling not in TIME_SAMPLING:
            raise ValueError(
                f"objective.time_sampling must be one of {TIME_SAMPLING}, got {self.time_sampling!r}"
            )
        check_bounds(
            self,
            snr_gamma=(0.0, None),
            flow_shift=(0.0, None),
            flow_base_shift=(-10.0, 10.0),
            flow_max_shift=(-10.0, 10.0),
            flow_base_tokens=(1, None),
            flow_max_tokens=(1, None),
            first_chunk_share=(0.0, 1.0),
            history_noise=(0.0, 1.0),
        )
        if self.flow_token_shift and self.flow_shift != 1.0:
            raise ValueError("objective: set flow_shift or flow_token_shift, not both")
        if self.flow_token_shift and self.flow_max_tokens <= self.flow_base_tokens:
            raise ValueError("objective.flow_max_tokens must be above flow_base_tokens")
        if self.pyramid_stages > 1 or self.pyramid_boundaries is not None:
            if self.kind != "flow" or self.flow_token_shift or self.flow_shift != 1.0:
                raise ValueError(
                    "objective.pyramid_stages needs kind: flow without flow_shift / flow_token_shift (the stage "
                    "windows set the noise levels)"
                )
            try:
                self.pyramid()
            except ValueError as err:
                raise ValueError(f"objective: {err}") from None
        steps = self.pyramid_stage_steps
        if steps is not None and (len(steps) != self.pyramid_stages or min(steps) < 1):
            raise ValueError(
                f"objective.pyramid_stage_steps must be {self.pyramid_stages} positive step counts (coarsest "
                f"stage first), got {steps}"
            )
        weights = self.pyramid_stage_weights
        if weights is not None and (
            len(weights) != self.pyramid_stages or min(weights) < 0 or not sum(weights) > 0
        ):
            raise ValueError(
                f"objective.pyramid_stage_weights must be {self.pyramid_stages} non-negative numbers (one per "
                f"pyramid stage) with a positive sum, got {weights}"
            )

    def size_factor(self) -> int:
        """How many times smaller than full size the coarsest stage is (1 without a pyramid): bucket sizes must be
        whole patches at every stage."""
        pyramid = self.pyramid()
        return 1 if pyramid is None else pyramid.coarsest

    def pyramid(self) -> PyramidSchedule | None:
        """The spatial pyramid these settings ask for (None: plain flow)."""
        if self.pyramid_stages <= 1 and self.pyramid_boundaries is None:
            return None
        bounds = None if self.pyramid_boundaries is None else tuple(self.pyramid_boundaries)
        return PyramidSchedule(self.pyramid_stages, bounds)

    def build(self) -> Objective:
        """The `Objective` these settings describe."""
        token_shift = None
        if self.flow_token_shift:
            token_shift = TokenShift(
                self.flow_base_shift, self.flow_max_shift, self.flow_base_tokens, self.flow_max_tokens
            )
        return Objective(
            self.kind,
            self.zero_terminal_snr,
            self.snr_gamma,
            self.flow_shift,
            time_sampling=self.time_sampling,
            token_shift=token_shift,
            pyramid=self.pyramid(),
            stage_weights=self.pyramid_stage_weights,
            stage_steps=self.pyramid_stage_steps,
            first_chunk_share=self.first_chunk_share,
            history_noise=self.history_noise,
        )


@dataclass
class DataConfig:
    format: str = "normal"  # normal | webvid | diffusers
    meta: str | None = None  # metadata file (normal, webvid)
    root: str | None = None  # dataset root (relative paths, webvid videos, diffusers folder)
    base_size: int = 256  # bucket area base (pixels)
    num_frames: int = (
        17  # 1 + rk for the VAE's temporal ratio r (checked against the VAE), when no token_length
    )
    token_length: bool = False  # frames per bucket from the pixel-volume budget
    token_base_frames: int = 49  # budget: base_size^2 x token_base_frames
    max_frames: int | None = None  # token_length: cap on a bucket's frame count
    frame_stride: int = 1  # take every n-th frame of a video
    random_crop: bool = True  # False: centre crops and centred frame windows (what a latent cache holds)
    batch_size: int = 2  # per process and micro-batch
    num_workers: int = 0  # DataLoader worker processes
    caption_dropout: float = 0.1  # share of samples trained with the empty caption (for guidance)
    latent_cache: str | None = None  # read VAE latents + text features made by scripts/precompute.py
    text_cache_size: int = (
        1024  # captions whose features stay cached (CPU memory, least recently used out); 0: off
    )

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"data.format must be one of {FORMATS}, got {self.format!r}")
        check_bounds(
            self,
            base_size=(8, None),
            num_frames=(1, None),
            token_base_frames=(1, None),
            max_frames=(1, None),
            frame_stride=(1, None),
            batch_size=(1, None),
            num_workers=(0, None),
            caption_dropout=(0.0, 1.0),
            text_cache_size=(0, None),
        )


@dataclass
class OptimizationConfig:
    max_steps: int = 1000  # optimizer steps
    learning_rate: float = 1e-4  # AdamW
    lr_scheduler: str = "constant_with_warmup"  # any diffusers.optimization schedule name
    lr_warmup_steps: int = 0  # linear warm-up from 0
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    use_8bit_adam: bool = False  # bitsandbytes AdamW8bit (GPU)
    max_grad_norm: float = 1.0  # gradient clipping
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step (all of one bucket)
    mixed_precision: str = "no"  # no | fp16 | bf16; the frozen VAE and text encoder are held in this dtype
    ema_decay: float | None = None  # e.g. 0.999; None: no EMA

    def __post_init__(self) -> None:
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(
                f"optimization.mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}"
            )
        check_bounds(self, **OPTIMIZATION_BOUNDS, lr_warmup_steps=(0, None), ema_decay=(0.0, 1.0))


@dataclass
class CheckpointingConfig:
    steps: int = 500  # a checkpoint every this many steps (and at the end)
    total_limit: int = 3  # keep the newest this many
    resume_from: str | None = None  # "latest" or a checkpoint folder

    def __post_init__(self) -> None:
        check_bounds(self, steps=(0, None), total_limit=(0, None))  # 0: at the end only / keep all


@dataclass
class ValidationConfig:
    steps: int = 500  # 0 (or no prompts): no validation
    prompts: list[str] = field(
        default_factory=lambda: ["a red circle moving right on a gray background"]
    )  # one video each
    num_frames: int = 17  # frames per validation video (t2i runs make images)
    size: int | None = None  # pixels; None: data.base_size
    inference_steps: int = 20  # sampler steps
    sampler: str | None = None  # None: the objective's default (DPM++, Flow for flow)
    fps: int = 8  # of the validation mp4s

    def __post_init__(self) -> None:
        check_bounds(
            self,
            steps=(0, None),
            num_frames=(1, None),
            size=(8, None),
            inference_steps=(1, None),
            fps=(1, None),
        )


@dataclass
class LoggingConfig:
    steps: int = 10  # log the training scalars every this many steps
    sample_indices: bool = False  # each process appends the record indices it trained on (data audit)
    report_to: str = "tensorboard"  # tensorboard | wandb (pip install wandb) | none

    def __post_init__(self) -> None:
        if self.report_to not in REPORT_TO:
            raise ValueError(f"logging.report_to must be one of {REPORT_TO}, got {self.report_to!r}")
        check_bounds(self, steps=(1, None))


@dataclass
class LoraSettings:
    rank: int = 8  # LoRA rank
    alpha: float = 8.0  # LoRA scale numerator (scale = alpha / rank)
    include_motion_modules: bool = False  # lora mode: also adapt the motion modules' attention

    def __post_init__(self) -> None:
        check_bounds(self, rank=(1, None), alpha=(0.0, None))


@dataclass
class CaptionContrastConfig:
    """A term that makes the model worse with a wrong caption word: for samples noised at least `min_level`
    whose caption has a word of `swaps`, the loss with that word swapped must exceed the true loss by `margin`
    (relative); a hinge adds `weight` x the shortfall. For words (motion direction, then shape) that plain
    denoising learns far more slowly than the rest of the caption. With several fields, each taking sample swaps
    one of the fields its caption has, drawn at random, so a step costs one extra forward whatever the count."""

    weight: float = 0.0  # 0: off
    swaps: dict[str, str] | str | list[str] = (
        "direction"  # word -> replacement, a field of data.caption_swap.SWAPS, or a list of fields
    )
    margin: float = 0.5  # the swapped caption's loss should be this share above the true caption's
    min_level: float = (
        0.75  # noise level from which a sample takes part (layout and motion are decided there)
    )

    def __post_init__(self) -> None:
        check_bounds(self, weight=(0.0, None), margin=(0.0, None), min_level=(0.0, 1.0))
        self.tables()  # an unknown field fails at load time

    def tables(self) -> list[dict[str, str]]:
        """One word -> replacement table per field to contrast."""
        if isinstance(self.swaps, dict):
            return [{str(k).lower(): str(v) for k, v in self.swaps.items()}]
        fields = [self.swaps] if isinstance(self.swaps, str) else list(self.swaps)
        if not fields:
            raise ValueError("contrast.swaps: an empty list; name at least one field")
        for name in fields:
            if name not in SWAPS:
                raise ValueError(f"contrast.swaps: unknown field {name!r}; choose from {sorted(SWAPS)}")
        return [SWAPS[name] for name in fields]


@dataclass
class TrainConfig:
    output_dir: str = "outputs/train"  # checkpoints, validation, logs and the exported pipeline / LoRA
    overwrite: bool = False  # allow a fresh run into an output_dir that holds another run (else refused)
    mode: str = "t2v"  # t2i | t2v | lora | motion_lora | inpaint
    t2v_stage: int = 2  # 1 images (DiT), 2 motion modules, 3 whole DiT
    seed: int = 0  # every random draw of the run derives from it (exact resume)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)  # inpaint mask probabilities by kind
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    checkpointing: CheckpointingConfig = field(default_factory=CheckpointingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    contrast: CaptionContrastConfig = field(default_factory=CaptionContrastConfig)  # caption contrast term

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "t2v" and self.t2v_stage not in (1, 2, 3):
            raise ValueError(f"t2v_stage must be 1, 2 or 3, got {self.t2v_stage}")
        if self.model.train_text_encoder and self.mode not in ("t2i", "t2v"):
            raise ValueError(f"train_text_encoder applies to t2i and t2v, not mode {self.mode!r}")
        if self.objective.pyramid() is not None and self.mode == "inpaint":
            raise ValueError(
                "objective.pyramid_stages: inpaint training keeps full-size conditions; use t2i / t2v"
            )
        if self.validation.sampler is not None:  # checked now, not at the first validation
            self.objective.build().sampler(self.validation.sampler)
