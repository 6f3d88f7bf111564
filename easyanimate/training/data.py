"""The records a DiT run trains on and their bucket sampler (the trainer and scripts/precompute.py)."""

from __future__ import annotations

from ..data.bucket import BucketBatchSampler, TokenLengthRule
from ..data.formats import load_records
from ..models.loading import transformer_history
from ..models.shape_rule import ShapeRule
from .config import TrainConfig


def run_size_factor(cfg: TrainConfig) -> int:
    """How many times smaller than full size a run's smallest latent is per side: the spatial pyramid's coarsest
    stage, the most compressed history frame of a frame-by-frame model (1 otherwise). Bucket sizes must be whole
    patches at that size; the trainer and the latent cache build their buckets with it alike."""
    history = transformer_history(cfg.model.transformer_source, **cfg.model.transformer_options) or [1]
    return max(cfg.objective.size_factor(), *history)


def build_data(
    cfg: TrainConfig, data_kind: str, shape: ShapeRule, num_replicas: int = 1, rank: int = 0
) -> tuple[list, BucketBatchSampler]:
    """The records this run trains on and their bucket sampler (shared with scripts/precompute.py); bucket
    sizes and frame counts follow the model's shape rule."""
    d = cfg.data
    records = load_records(d.format, d.meta, d.root)
    if data_kind != "both":
        records = [r for r in records if r.type == data_kind]
    if d.token_length:
        token_rule = TokenLengthRule(
            d.base_size,
            d.token_base_frames,
            d.max_frames,
            temporal_ratio=shape.temporal_ratio,
            tokens_per_pixel=1 / shape.size_multiple**2,
        )
    else:
        token_rule = None
        shape.check_frames(d.num_frames, "data.num_frames")
    sampler = BucketBatchSampler(
        records,
        d.batch_size,
        base_size=d.base_size,
        num_frames=d.num_frames,
        token_rule=token_rule,
        seed=cfg.seed,
        num_replicas=num_replicas,
        rank=rank,
        multiple=shape.size_multiple,
        batches_per_step=cfg.optimization.gradient_accumulation_steps,  # one bucket per optimizer step
    )
    if len(sampler) == 0:
        raise ValueError(f"no full batch of {d.batch_size} per process in {len(records)} records")
    return records, sampler
