"""Run settings are checked before any work (issue #22 items 6 and 8): bad step / size / rate values and a
validation sampler that does not fit the objective are refused at load, in one line naming the key; a fresh run
into a folder holding another run is refused unless it resumes or says overwrite."""

from __future__ import annotations

import random

import pytest

from easyanimate.config import ConfigError, load_config
from easyanimate.training.config import TrainConfig
from easyanimate.training.scaffold import RunScaffold
from easyanimate.training.vae.config import VAETrainConfig


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimization.max_steps=-5", "max_steps must be a finite number >= 1, got -5"),
        ("optimization.gradient_accumulation_steps=0", "gradient_accumulation_steps must be"),
        ("optimization.learning_rate=.nan", "learning_rate must be a finite number"),
        ("optimization.ema_decay=1.5", "ema_decay must be a finite number between 0.0 and 1.0"),
        ("data.batch_size=0", "batch_size must be a finite number >= 1, got 0"),
        ("data.caption_dropout=2", "caption_dropout must be"),
        ("logging.steps=0", "steps must be a finite number >= 1, got 0"),
        ("checkpointing.steps=-1", "steps must be a finite number >= 0, got -1"),
        ("validation.inference_steps=0", "inference_steps must be"),
        ("validation.sampler=Heun", "unknown sampler 'Heun'"),
        ("lora.rank=0", "rank must be"),
    ],
)
def test_bad_settings_are_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(TrainConfig, None, [override])


def test_validation_sampler_must_fit_the_objective():
    with pytest.raises(ConfigError, match="does not fit a 'flow' model"):
        load_config(TrainConfig, None, ["objective.kind=flow", "validation.sampler=DPM++"])
    assert load_config(
        TrainConfig, None, ["objective.kind=flow", "validation.sampler=Flow"]
    ).validation.sampler


@pytest.mark.parametrize(
    "override", ["log_steps=0", "checkpointing_steps=-1", "max_steps=0", "data.batch_size=0", "fps=0"]
)
def test_vae_settings_are_refused_at_load(override):
    with pytest.raises(ConfigError, match="must be a finite number"):
        load_config(VAETrainConfig, None, [override])


NUMERIC = [
    "optimization.max_steps", "optimization.learning_rate", "optimization.gradient_accumulation_steps",
    "optimization.max_grad_norm", "optimization.lr_warmup_steps", "optimization.ema_decay", "data.batch_size",
    "data.base_size", "data.num_frames", "data.frame_stride", "data.caption_dropout", "data.num_workers",
    "checkpointing.steps", "checkpointing.total_limit", "validation.steps", "validation.num_frames",
    "validation.inference_steps", "validation.fps", "logging.steps", "lora.rank", "lora.alpha", "seed",
]  # fmt: skip
BAD = [
    "-5",
    "0",
    "-0.5",
    ".nan",
    ".inf",
    "-.inf",
    "1e400",
    "abc",
    "[]",
    "{}",
    "true",
    "''",
    "3.5",
    "999999999",
]


def test_fuzzed_values_give_a_config_error_or_a_config():
    """Random values into the numeric keys: a ConfigError naming the key, or a config whose value is sane;
    never another exception."""
    rng = random.Random(0)
    for _ in range(300):
        picks = {rng.choice(NUMERIC): rng.choice(BAD) for _ in range(rng.randint(1, 3))}
        try:
            cfg = load_config(TrainConfig, None, [f"{k}={v}" for k, v in picks.items()])
        except ConfigError as err:
            assert any(k.split(".")[-1] in str(err) or k.split(".")[0] in str(err) for k in picks), (
                picks,
                err,
            )
            continue
        assert cfg.optimization.max_steps >= 1 and cfg.data.batch_size >= 1, picks


def test_a_used_output_dir_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "config.yaml").write_text("mode: t2v\n")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint-00000002").mkdir()
    cfg = TrainConfig(output_dir=str(tmp_path))
    common = dict(seed=0, mixed_precision="no", gradient_accumulation_steps=1, max_steps=1, checkpoint_every=1,
                  keep=1, report_to="none")  # fmt: skip
    with pytest.raises(ValueError, match="already holds a run .config.yaml, checkpoints.: resume it"):
        RunScaffold(cfg, str(tmp_path), resume_from=None, **common)
    assert (tmp_path / "checkpoints" / "checkpoint-00000002").is_dir()  # nothing touched
    RunScaffold(cfg, str(tmp_path), resume_from="latest", **common)  # resuming is fine
    assert (tmp_path / "checkpoints" / "checkpoint-00000002").is_dir()
    RunScaffold(cfg, str(tmp_path), resume_from=None, overwrite=True, **common)
    assert not (tmp_path / "checkpoints").exists() and (tmp_path / "config.yaml").exists()  # the new run's
