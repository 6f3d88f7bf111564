"""The typed config of a preprocessing run (config/preprocess.yaml; key=value overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SplitConfig:
    threshold: float = 27.0  # PySceneDetect ContentDetector threshold
    min_seconds: float = 3.0
    max_seconds: float = 10.0  # longer scenes are cut into pieces of at most this
    window_seconds: float = 120.0  # videos are first cut into windows this long, split in parallel (0: whole)


@dataclass
class BasicFilter:
    min_seconds: float = 0.0
    min_width: int = 0
    min_height: int = 0
    min_fps: float = 0.0


@dataclass
class QualityFilter:
    enabled: bool = True
    min_sharpness: float = 20.0  # Laplacian variance of the grayscale frames
    min_brightness: float = 30.0  # mean luma, 0..255
    max_brightness: float = 235.0
    min_contrast: float = 10.0  # luma standard deviation
    aesthetic_model: str | None = None  # local folder: CLIP/SigLIP vision model + aesthetic_head.safetensors
    min_aesthetic: float = 4.5


@dataclass
class OCRFilter:
    backend: str | None = "tesseract"  # tesseract | easyocr | None (off)
    max_text_area: float = 0.02  # fraction of the middle frame covered by text
    min_confidence: float = 60.0
    easyocr_models: str | None = None  # local folder with easyocr weights


@dataclass
class MotionFilter:
    enabled: bool = True
    min_motion: float = 0.3  # mean optical-flow magnitude, pixels per frame at 256 px
    max_motion: float = 20.0
    num_frames: int = 5


@dataclass
class CaptionConfig:
    model: str | None = None  # local transformers image-to-text folder; None: keep the raw name as text
    num_frames: int = 1  # frames per clip given to the captioner (the middle ones)
    batch_size: int = 8
    max_new_tokens: int = 40
    prompt: str | None = None


@dataclass
class EngineConfig:
    ray_address: str | None = None  # None: a local Ray; host:port of a cluster's head (`ray start --head`)
    num_cpus: int | None = None  # local Ray only
    cpu_concurrency: int | None = None  # cap on parallel tasks per CPU stage (None: as CPUs allow; faster)
    model_concurrency: int = 1  # most actors per model stage (the pool autoscales from 1)
    cpus_per_actor: float = 0.5  # fractional: a model actor leaves the rest of its CPU to the CPU stages
    gpus_per_actor: float = 0.0
    rows_per_file: int = (
        8  # rows per Parquet file (and per checkpoint commit: Ctrl-C loses at most this per task)
    )
    rows_per_task: int = (
        1  # videos / windows / clips per stage task (more when a row is under a second of work)
    )
    ship_code: bool = True  # on a cluster, send this package to the nodes (runtime_env py_modules)
    progress_bars: bool = True


@dataclass
class PreprocessConfig:
    split: SplitConfig = field(default_factory=SplitConfig)
    basic: BasicFilter = field(default_factory=BasicFilter)
    quality: QualityFilter = field(default_factory=QualityFilter)
    ocr: OCRFilter = field(default_factory=OCRFilter)
    motion: MotionFilter = field(default_factory=MotionFilter)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
