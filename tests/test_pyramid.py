"""Spatial pyramid flow matching: the maths (stage endpoints, the renoised jump, K = 1 is plain flow), the
sampler (exact with an oracle velocity), the objective and config, and a pyramid model through the pipeline."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from easyanimate.diffusion.objectives import Objective
from easyanimate.diffusion.pyramid import PyramidSchedule, down, jump_level, renoise_up, stage_noise, up
from easyanimate.diffusion.pyramid_sampler import PyramidFlowScheduler, split_steps
from easyanimate.diffusion.samplers import get_scheduler, samplers_for, swap_scheduler


def test_windows_are_tied_by_the_jump():
    pyr = PyramidSchedule(3)
    assert pyr.window(2) == (pytest.approx(2 / 3), 1.0)
    assert pyr.window(1) == (pytest.approx(1 / 3), pytest.approx(0.8))
    assert pyr.window(0) == (0.0, pytest.approx(0.5))
    for k in range(2):  # stage k starts where the jump from stage k + 1's end lands
        assert pyr.window(k)[1] == pytest.approx(jump_level(pyr.window(k + 1)[0]))
    with pytest.raises(ValueError, match="rise strictly"):
        PyramidSchedule(3, (0.6, 0.4))
    with pytest.raises(ValueError, match="need 2 boundaries"):
        PyramidSchedule(3, (0.5,))


def test_one_stage_is_plain_flow_matching_exactly():
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 2, 8, 8, generator=gen), torch.randn(3, 4, 2, 8, 8, generator=gen)
    pyramid = Objective("flow", pyramid=PyramidSchedule(1)).pyramid_noise(
        x0, noise, torch.Generator().manual_seed(1)
    )
    plain = Objective("flow").noise_at(x0, noise, pyramid.timesteps / 1000)
    assert torch.equal(pyramid.model_input, plain.model_input)
    assert torch.equal(pyramid.target, plain.target)
    assert torch.equal(pyramid.timesteps, plain.timesteps)

    # and its sampler takes diffusers' flow Euler steps over the same levels
    velocity = lambda z, level: 0.3 * z - level  # noqa: E731  any smooth field
    ours = PyramidFlowScheduler(stages=1)
    ours.set_timesteps(7)
    ref = FlowMatchEulerDiscreteScheduler(shift=1.0)
    ref.set_timesteps(sigmas=torch.linspace(1, 0, 8)[:-1].tolist())
    assert torch.allclose(ours.timesteps, ref.timesteps)
    a = b = noise[0]
    for t in ours.timesteps:
        a = ours.step(velocity(a, t / 1000), t, a).prev_sample
        b = ref.step(velocity(b, t / 1000), t, b).prev_sample
    assert torch.allclose(a, b, atol=1e-6)


def test_jump_matches_the_next_stage_start_in_distribution():
    """Stage k + 1's end, upsampled and renoised, against stage k's start: same mean, variance and in-block
    covariance per element, measured over many noise draws of one latent."""
    pyr = PyramidSchedule(3)
    n = 20000
    x0 = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)).expand(n, -1, -1, -1)
    gen = torch.Generator().manual_seed(1)
    for k in (1, 0):
        b = pyr.window(k + 1)[0]
        end = pyr.endpoints(x0, torch.randn(n, 1, 16 >> (k + 1), 16 >> (k + 1), generator=gen), k + 1)[0]
        jumped = renoise_up(end, b, gen)
        start = pyr.endpoints(x0, torch.randn(n, 1, 16 >> k, 16 >> k, generator=gen), k)[1]
        assert jumped.shape == start.shape
        assert (jumped.mean(0) - start.mean(0)).abs().max() < 0.04
        assert (jumped.var(0) / start.var(0)).sub(1).abs().max() < 0.08
        s = pyr.window(k)[1]
        assert start.var(0).mean() == pytest.approx(s**2, rel=0.02)
        assert jumped.var(0).mean() == pytest.approx(s**2, rel=0.02)

        def block_cov(z):  # covariance of horizontal neighbours inside a 2x2 block: 0 for iid noise
            c = z - z.mean(0)
            return (c[..., 0::2] * c[..., 1::2]).mean(0).mean()

        assert abs(block_cov(jumped)) < 0.02 * s**2 and abs(block_cov(start)) < 0.02 * s**2
    # without the renoising the upsampled noise is perfectly correlated inside blocks: the test can fail
    c = up(end) - up(end).mean(0)
    assert (c[..., 0::2] * c[..., 1::2]).mean(0).mean() > 0.5 * b**2


def test_sampler_with_the_oracle_velocity_lands_on_the_data():
    """Data = one latent: the exact velocity of each stage is known in closed form; Euler on straight lines is
    exact, so sampling from coarse noise through both jumps must end at the latent itself."""
    pyr = PyramidSchedule(3)
    x0 = torch.randn(1, 2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    sched = get_scheduler("Pyramid", "flow", pyramid=pyr)
    sched.set_timesteps(stage_steps=[3, 2, 4])
    assert sched.stage_steps == [3, 2, 4] and len(sched.timesteps) == 9
    z = torch.randn(sched.initial_shape(x0.shape), generator=torch.Generator().manual_seed(4))
    assert z.shape[-2:] == (4, 4)
    for step, t in zip(sched._steps, sched.timesteps):
        k, level = step.stage, float(t) / 1000
        lo, hi = pyr.window(k)
        target = down(x0, pyr.factor(k))
        coarse = up(down(target, 2)) if k < 2 else torch.zeros_like(target)
        u = (level - lo) / (hi - lo)
        noise = (z - (1 - u) * (1 - lo) * target - u * (1 - hi) * coarse) / level
        velocity = ((1 - hi) * coarse - (1 - lo) * target + (hi - lo) * noise) / (hi - lo)
        z = sched.step(velocity, t, z, generator=torch.Generator().manual_seed(5)).prev_sample
    assert z.shape == x0.shape
    assert torch.allclose(z, x0, atol=1e-4)


def test_stage_noise_is_unit_variance_and_steps_split():
    noise = torch.randn(64, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    for f in (1, 2, 4):
        assert stage_noise(noise, f).var().item() == pytest.approx(1.0, rel=0.03)
    assert split_steps(25, 3) == [9, 8, 8]
    with pytest.raises(ValueError, match="at least 3 steps"):
        split_steps(2, 3)


def test_objective_draws_a_stage_and_the_sampler_matches():
    obj = Objective("flow", pyramid=PyramidSchedule(3), time_sampling="uniform")
    x0 = torch.randn(4, 4, 2, 16, 16)
    sizes = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = obj.noise(x0, torch.randn_like(x0), gen)
        sizes.add(batch.model_input.shape[-1])
        assert batch.target.shape == batch.model_input.shape
        assert ((batch.timesteps >= 0) & (batch.timesteps <= 1000)).all()
    assert sizes == {16, 8, 4}
    sched = obj.sampler()
    assert isinstance(sched, PyramidFlowScheduler) and samplers_for(sched) == ["Pyramid"]
    back = Objective.for_scheduler(sched)
    assert back.pyramid == obj.pyramid and back.default_sampler == "Pyramid"
    assert isinstance(swap_scheduler(sched, "Pyramid"), PyramidFlowScheduler)
    with pytest.raises(ValueError, match="samples with 'Pyramid' only"):
        swap_scheduler(sched, "Flow")
    with pytest.raises(ValueError, match="spatial-pyramid flow models only"):
        get_scheduler("Pyramid", "flow")
    with pytest.raises(ValueError, match="no shift"):
        Objective("flow", flow_shift=3.0, pyramid=PyramidSchedule(2))


def test_config_keys_build_the_pyramid():
    from easyanimate.training.config import ObjectiveConfig, TrainConfig

    cfg = ObjectiveConfig(kind="flow", pyramid_stages=2, pyramid_boundaries=[0.4])
    assert cfg.build().pyramid == PyramidSchedule(2, (0.4,))
    assert ObjectiveConfig(kind="flow").build().pyramid is None
    with pytest.raises(ValueError, match="needs kind: flow"):
        ObjectiveConfig(kind="epsilon", pyramid_stages=3)
    with pytest.raises(ValueError, match="objective: 3 pyramid stages need 2 boundaries"):
        ObjectiveConfig(kind="flow", pyramid_stages=3, pyramid_boundaries=[0.5])
    with pytest.raises(ValueError, match="inpaint training"):
        TrainConfig(mode="inpaint", objective=ObjectiveConfig(kind="flow", pyramid_stages=2))
    with pytest.raises(ValueError, match="pyramid_stage_steps must be 2 positive"):
        ObjectiveConfig(kind="flow", pyramid_stages=2, pyramid_stage_steps=[25])


def test_a_saved_default_split_serves_any_step_count(tmp_path):
    """`objective.pyramid_stage_steps` [17, 8] is saved with the sampler: 25 steps split that way, another count in
    the same proportions (not silently 25), explicit stage steps still win; without it the split is even."""
    from easyanimate.training.config import ObjectiveConfig

    sched = ObjectiveConfig(kind="flow", pyramid_stages=2, pyramid_stage_steps=[17, 8]).build().sampler()
    sched.save_pretrained(tmp_path)
    sched = PyramidFlowScheduler.from_pretrained(tmp_path)
    for steps, split in ((25, [17, 8]), (50, [34, 16]), (10, [7, 3]), (2, [1, 1])):
        sched.set_timesteps(steps)
        assert sched.stage_steps == split and len(sched.timesteps) == steps
    sched.set_timesteps(25, stage_steps=[5, 20])
    assert sched.stage_steps == [5, 20]
    even = ObjectiveConfig(kind="flow", pyramid_stages=2).build().sampler()
    even.set_timesteps(25)
    assert even.stage_steps == [13, 12]
    assert split_steps(7, 3, [1, 1, 20]) == [1, 1, 5]  # at least one step per stage


@pytest.fixture(scope="module")
def pyramid_dir(tmp_path_factory) -> str:
    """A tiny pipeline folder whose sampler is a 2-stage pyramid (as a pyramid training run saves it)."""
    from conftest import make_pipeline

    from easyanimate.pipeline import EasyAnimatePipeline

    flow = make_pipeline(tmp_path_factory.mktemp("flow"), sampler="Flow", prediction_type="flow")
    pipe = EasyAnimatePipeline.from_pretrained(flow)
    pipe.scheduler = get_scheduler("Pyramid", "flow", pyramid=PyramidSchedule(2))
    root = tmp_path_factory.mktemp("models")
    folder = str(root / "Diffusion_Transformer" / "tiny-pyramid")
    pipe.save_pretrained(folder)
    return folder


def test_pipeline_samples_stage_by_stage(pyramid_dir):
    from easyanimate.models.loading import pipeline_shape_rule
    from easyanimate.pipeline.loading import load_pipeline

    pipe = load_pipeline(pyramid_dir)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, PyramidFlowScheduler)
    assert pipe.size_factor == 32 == pipeline_shape_rule(pyramid_dir).size_multiple  # 8 (VAE) x 2 (patch) x 2
    sizes = []

    def record(_pipe, i, t, kw):
        sizes.append(tuple(kw["latents"].shape[-2:]))
        return kw

    out = pipe(
        "a red circle moving left", num_frames=5, height=64, width=32, stage_steps=[2, 3],
        generator=torch.Generator().manual_seed(0), callback_on_step_end=record,
    ).frames  # fmt: skip
    assert out.shape == (1, 5, 64, 32, 3) and np.isfinite(out).all()
    assert sizes == [(4, 2)] * 1 + [(8, 4)] * 4  # the jump comes with the coarse stage's last step
    with pytest.raises(ValueError, match="multiples of 32"):
        pipe("a red circle", num_frames=5, height=48, width=32, num_inference_steps=2)
    with pytest.raises(ValueError, match="video-to-video"):
        pipe("a red circle", num_frames=5, height=32, width=32, num_inference_steps=2, known_latents=out)


def test_cli_and_web_ui_take_stage_steps(pyramid_dir, tmp_path):
    from conftest import run_python

    from easyanimate.ui.controller import Controller, UIError

    r = run_python(
        "predict_t2v.py", "--model", pyramid_dir, "--prompt", "a red circle moving up", "--stage-steps", "1,2",
        "--num-frames", "5", "--height", "32", "--width", "32", "--output-dir", str(tmp_path / "cli"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    with open(next((tmp_path / "cli").glob("*.json"))) as fh:
        assert json.load(fh)["stage_steps"] == [1, 2]
    bad = run_python("predict_t2v.py", "--model", pyramid_dir, "--prompt", "x", "--stage-steps", "3,0")
    assert bad.returncode == 2 and "positive step counts" in bad.stderr

    root = os.path.dirname(os.path.dirname(pyramid_dir))
    for sub in ("Motion_Module", "Personalized_Model"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    ui = Controller(root, output_dir=str(tmp_path / "ui"))
    assert ui.defaults("tiny-pyramid")["samplers"] == ["Pyramid"]
    s = dict(
        mode="t2v", prompt="a red circle moving left", negative_prompt="", base_model="tiny-pyramid",
        motion_module="none", lora="none", lora_weight=0.55, sampler="Pyramid", steps=2, guidance=6.0, seed=1,
        width=32, height=32, frames=5, fps=8, stage_steps="2,1",
    )  # fmt: skip
    seen = []
    ui.generate(s, progress=lambda i, n: seen.append((i, n)))
    assert seen[-1] == (3, 3)
    with pytest.raises(UIError, match="stage steps"):
        ui.generate({**s, "stage_steps": "two"})
    with pytest.raises(UIError, match="multiple of 32"):
        ui.generate({**s, "width": 16})


def test_train_t2v_sh_with_the_pyramid_config(tmp_path, shapes_dir):
    """The user's command: scripts/train_t2v.sh with config/train_t2v_pyramid.yaml (3 spatial stages and a
    history compressed up to 4x, so 64 px buckets for the tiny 8x VAE and patch 2), validation through both
    pyramids, the pipeline saved with them."""
    from conftest import make_pipeline, run_command, script_env

    base = make_pipeline(tmp_path / "base", sampler="Flow", prediction_type="flow")
    env = script_env(
        MODEL_NAME=base, DATASET_NAME=shapes_dir, OUTPUT_DIR=str(tmp_path / "t2v"),
        CONFIG="config/train_t2v_pyramid.yaml",
    )  # fmt: skip
    args = ["optimization.max_steps=3", "data.base_size=64", "data.num_frames=5", "data.batch_size=2"]
    args += [
        "validation.steps=3",
        "validation.num_frames=5",
        "validation.inference_steps=3",
        "validation.size=64",
    ]
    res = run_command(["sh", "scripts/train_t2v.sh", *args], timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    with open(tmp_path / "t2v" / "pipeline" / "scheduler" / "scheduler_config.json") as fh:
        saved = json.load(fh)
    assert saved["_class_name"] == "PyramidFlowScheduler" and saved["stages"] == 3
    with open(tmp_path / "t2v" / "pipeline" / "transformer" / "config.json") as fh:
        model = json.load(fh)  # the temporal pyramid too: frame by frame, history compressed
    assert model["autoregressive_history"] == [1, 2, 4, 4] and model["motion_causal"] is True
    validation = list((tmp_path / "t2v").rglob("*.mp4"))  # sampled with both pyramids during training
    assert validation, sorted(p.name for p in (tmp_path / "t2v").rglob("*"))


def test_noise_fixed_matches_training_at_that_level():
    """Evaluation at a fixed level (caption sensitivity) noises as training does: plain flow as noise_at, a
    pyramid at the coarsest stage holding the level, frame by frame after the compressed history."""
    from easyanimate.diffusion.temporal_pyramid import TemporalPyramid

    x0, noise = torch.randn(2, 4, 3, 16, 16), torch.randn(2, 4, 3, 16, 16)
    plain = Objective("flow")
    assert torch.equal(
        plain.noise_fixed(x0, noise, 0.7).model_input, plain.noise_at(x0, noise, 0.7).model_input
    )
    pyr = Objective("flow", pyramid=PyramidSchedule(3))
    for level, size in ((0.9, 4), (0.7, 4), (0.5, 8), (0.2, 16)):  # [2/3, 1], [1/3, 0.8], [0, 0.5]
        batch = pyr.noise_fixed(x0, noise, level)
        assert batch.model_input.shape[-1] == size and torch.allclose(
            batch.timesteps, torch.tensor(level * 1000)
        )
    ar = Objective("flow").autoregressive(TemporalPyramid((1, 2)))
    batch = ar.noise_fixed(x0, noise, 0.6)
    assert [f.shape[-1] for f in batch.model_input] == [8, 16, 16] and batch.timesteps[0].tolist() == [
        0,
        0,
        600,
    ]
    assert torch.equal(batch.model_input[1], x0[:, :, 1])
