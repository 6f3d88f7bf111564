"""Checkpoints run no code and lose nothing (issue #22 items 1 and 5): the EMA state is safetensors + JSON, a
pickle planted in a checkpoint is never loaded; resume continues exactly."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from conftest import make_pipeline, tiny_run
from safetensors.torch import load_file

from easyanimate.config import load_config
from easyanimate.training.config import TrainConfig
from easyanimate.training.trainer import train


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    return make_pipeline(tmp_path_factory.mktemp("base"))


def run(out, base, shapes_dir, steps: int, resume: bool = False):
    settings = {
        **tiny_run(out, base, shapes_dir),
        "optimization.max_steps": steps,
        "optimization.ema_decay": 0.9,
        "checkpointing.steps": 1,
        "validation.steps": 0,
        "logging.report_to": "none",
    }
    if resume:
        settings["checkpointing.resume_from"] = "latest"
    return train(load_config(TrainConfig, None, [f"{k}={v}" for k, v in settings.items()]))


class Payload:
    """Unpickling this runs code: it creates a file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_planted_pickle_never_runs_and_ema_resumes_exactly(tmp_path, base, shapes_dir):
    straight = tmp_path / "straight"
    run(straight, base, shapes_dir, 3)
    split = tmp_path / "split"
    run(split, base, shapes_dir, 2)
    checkpoint = split / "checkpoints" / "checkpoint-00000002"
    assert {"ema.safetensors", "ema.json"} <= set(os.listdir(checkpoint))
    assert not [f for f in os.listdir(checkpoint) if f.startswith("custom_checkpoint")]  # no pickled EMA
    marker = tmp_path / "code-ran"
    for name in ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"):
        with open(checkpoint / name, "wb") as fh:
            pickle.dump(Payload(str(marker)), fh)
    with pytest.raises(
        ValueError, match="custom_checkpoint_0.pkl, custom_checkpoint_1.pkl, which this trainer"
    ):
        run(split, base, shapes_dir, 3, resume=True)
    assert not marker.exists()
    for name in ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"):
        os.remove(checkpoint / name)
    result = run(split, base, shapes_dir, 3, resume=True)
    assert result["start_step"] == 2 and not marker.exists()
    final = "pipeline/transformer/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(straight / final)), load_file(str(split / final))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the EMA weights, exactly those of the straight run


def test_a_checkpoint_without_the_ema_files_is_refused(tmp_path, base, shapes_dir):
    out = tmp_path / "run"
    run(out, base, shapes_dir, 1)
    checkpoint = out / "checkpoints" / "checkpoint-00000001"
    os.remove(checkpoint / "ema.safetensors")
    with pytest.raises(ValueError, match="every checkpoint .* is damaged"):  # its checksums miss the file
        run(out, base, shapes_dir, 2, resume=True)
    os.remove(checkpoint / "checksums.json")  # as an older checkpoint, written before checksums and safe EMA
    with pytest.raises(FileNotFoundError, match="holds no ema.safetensors"):
        run(out, base, shapes_dir, 2, resume=True)


def test_resume_skips_damaged_checkpoints(tmp_path, base, shapes_dir, caplog):
    """Checkpoint 3 truncated and checkpoint 2 altered by one bit: `latest` takes checkpoint 1 with a warning
    naming each damaged one, and the run ends exactly where an uninterrupted one does."""
    from easyanimate.training.checkpoint import resolve_resume

    straight = tmp_path / "straight"
    run(straight, base, shapes_dir, 4)
    split = tmp_path / "split"
    run(split, base, shapes_dir, 3)
    root = split / "checkpoints"
    assert "checksums.json" in os.listdir(root / "checkpoint-00000003")
    truncated = root / "checkpoint-00000003" / "model.safetensors"
    with open(truncated, "r+b") as fh:
        fh.truncate(os.path.getsize(truncated) - 10)
    flipped = root / "checkpoint-00000002" / "optimizer.bin"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checkpoint-00000002 is damaged: optimizer.bin differs"):
        resolve_resume(str(split), str(root / "checkpoint-00000002"))
    with caplog.at_level("WARNING"):
        result = run(split, base, shapes_dir, 4, resume=True)
    assert result["start_step"] == 1
    warned = caplog.text
    assert (
        "checkpoint-00000003: model.safetensors has" in warned
        and "checkpoint-00000002: optimizer.bin" in warned
    )
    final = "pipeline/transformer/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(straight / final)), load_file(str(split / final))
    assert all(torch.equal(a[k], b[k]) for k in a)
