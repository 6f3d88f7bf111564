"""Typed YAML configs: nested sections, overrides, type checks, unknown keys, round trip."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from easyanimate.config import ConfigError, load_config, save_config


@dataclass
class Inner:
    size: int = 64
    ratios: list[float] = field(default_factory=lambda: [1.0])


@dataclass
class Outer:
    name: str = "run"
    lr: float = 1e-4
    resume: str | None = None
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\nlr: 1e-3\ninner:\n  size: 32\n")
    cfg = load_config(Outer, str(path), ["inner.ratios=[0.5, 2]", "flag=true", "resume=latest", "lr=3"])
    assert cfg.name == "a" and cfg.lr == 3.0 and cfg.flag is True and cfg.resume == "latest"
    assert cfg.inner.size == 32 and cfg.inner.ratios == [0.5, 2.0]
    save_config(cfg, str(tmp_path / "saved.yaml"))
    assert load_config(Outer, str(tmp_path / "saved.yaml")) == cfg


@pytest.mark.parametrize(
    "override,message",
    [
        ("inner.sise=3", "unknown config key inner.sise"),
        ("inner.size=3.5", "inner.size: expected int"),
        ("flag=1", "flag: expected bool"),
        ("lr=fast", "lr: expected float"),
        ("inner=3", "inner: expected a mapping"),
        ("nokey", "not key=value"),
    ],
)
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, None, [override])


def test_every_shipped_training_config_loads():
    """config/train_*.yaml and the demo's DiT configs are valid TrainConfigs (no unknown key, no bad value)."""
    import glob
    import os

    from conftest import ROOT

    from easyanimate.training.config import TrainConfig

    paths = glob.glob(os.path.join(ROOT, "config", "train_*.yaml"))
    paths += [
        os.path.join(ROOT, "config", "demo", f"{n}.yaml")
        for n in (
            "t2i",
            "t2v",
            "t2v_motion",
            "t2v_pyramid",
            "t2v_motion_pyramid",
            "t2v_pyramid_fine",
            "inpaint",
            "lora",
        )
    ]
    assert len(paths) >= 10
    for path in paths:
        cfg = load_config(TrainConfig, path, [])
        assert cfg.mode in ("t2i", "t2v", "lora", "motion_lora", "inpaint"), path
    pyramid = load_config(TrainConfig, os.path.join(ROOT, "config", "demo", "t2v_pyramid.yaml"), [])
    assert pyramid.objective.pyramid().stages == 2
    assert pyramid.model.transformer_options["autoregressive_history"] == [1, 2, 4, 4]
    assert pyramid.model.transformer_options["autoregressive_chunk"] == 9  # a 17-frame clip's latent frames
    fine = load_config(TrainConfig, os.path.join(ROOT, "config", "demo", "t2v_pyramid_fine.yaml"), [])
    assert fine.objective.build().first_chunk_share == 1.0  # whole clips only
    assert fine.objective.pyramid_stage_weights == [0.75, 0.25]
