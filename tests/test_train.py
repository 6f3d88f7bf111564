"""The DiT training loop: every mode and objective learns, freezing is exact, LoRA loads, resume is exact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, make_pipeline, run_command, run_python, script_env, tiny_run
from safetensors.torch import load_file, save_file

from easyanimate.config import ConfigError, load_config
from easyanimate.data.datasets import VideoDataset
from easyanimate.data.formats import load_records
from easyanimate.data.video_io import read_frames
from easyanimate.diffusion.objectives import Objective
from easyanimate.models.text_encoder import load_text_encoder
from easyanimate.models.transformer3d import VideoTransformer3DModel
from easyanimate.pipeline import EasyAnimatePipeline
from easyanimate.pipeline.adapters import load_lora
from easyanimate.training.cache import CachedLatents
from easyanimate.training.config import TrainConfig
from easyanimate.training.strategies import inpaint_condition, strategy_of
from easyanimate.training.trainer import train


@pytest.fixture(scope="module")
def base_pipeline(tmp_path_factory) -> str:
    return make_pipeline(tmp_path_factory.mktemp("base"))


# the keys these tests set most, by their field name alone (keyword arguments cannot hold dots)
SECTION = {
    "max_steps": "optimization",
    "learning_rate": "optimization",
    "max_grad_norm": "optimization",
    "gradient_accumulation_steps": "optimization",
    "ema_decay": "optimization",
    "lr_warmup_steps": "optimization",
    "gradient_checkpointing": "model",
    "train_text_encoder": "model",
    "latent_cache": "data",
}


def overrides(tmp_path, base_pipeline, shapes_dir, **kw) -> list[str]:
    settings = {
        **tiny_run(tmp_path, base_pipeline, shapes_dir),
        "optimization.max_steps": 30,
        "validation.steps": 1000,
        "validation.num_frames": 5,
        "validation.inference_steps": 2,
        **{f"{SECTION[k]}.{k}" if k in SECTION else k: v for k, v in kw.items()},
    }
    return [f"{k}={v}" for k, v in settings.items()]


def config(tmp_path, base_pipeline, shapes_dir, **kw) -> TrainConfig:
    return load_config(TrainConfig, None, overrides(tmp_path, base_pipeline, shapes_dir, **kw))


@torch.no_grad()
def eval_loss(transformer, pipeline_dir, shapes_dir, cfg: TrainConfig, kind: str, draws: int = 6) -> float:
    """Mean loss over fixed clips, noise and timesteps: comparable before and after training."""
    pipe = EasyAnimatePipeline.from_pretrained(pipeline_dir)
    text = load_text_encoder(pipeline_dir)
    records = [
        r for r in load_records("normal", os.path.join(shapes_dir, "metadata.json")) if r.type == kind
    ][:2]
    ds = VideoDataset(records, 32, 32, 1 if kind == "image" else 9, random_crop=False)
    pixels = torch.stack([ds[i]["pixels"] for i in range(len(records))])
    feats, mask = text([r.text for r in records])
    o = cfg.objective
    objective = Objective(o.kind, o.zero_terminal_snr, o.snr_gamma, o.flow_shift, pyramid=o.pyramid())
    transformer.eval()
    total = 0.0
    for d in range(draws):
        g = torch.Generator().manual_seed(d)
        latents = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
        noised = objective.noise(latents, torch.randn(latents.shape, generator=g), g)
        x = noised.model_input
        if transformer.config.in_channels != latents.shape[1]:
            x = torch.cat([x, inpaint_condition(pipe.vae, pixels, np.random.default_rng(d), _masks())], dim=1)
        pred = transformer(x, noised.timesteps, feats, encoder_attention_mask=mask).sample
        total += objective.loss(pred[:, : latents.shape[1]], noised).item()
    return total / draws


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "flow"])
def test_noise_at_given_levels_is_the_training_noising(kind):
    """`noise` draws levels and calls `noise_at`; at the drawn levels `noise_at` reproduces the batch exactly,
    and a diffusion level lands on the timestep diffusers' scheduler noises to."""
    from diffusers import DDPMScheduler

    from easyanimate.diffusion.samplers import DIFFUSION_DEFAULTS

    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 2, 4, 4, generator=g), torch.randn(3, 4, 2, 4, 4, generator=g)
    objective = Objective(kind, flow_shift=3.0 if kind == "flow" else 1.0)
    drawn = objective.noise(x0, noise, torch.Generator().manual_seed(5))
    levels = drawn.timesteps / (1000.0 if kind == "flow" else 999.0)
    again = objective.noise_at(x0, noise, levels)
    for a, b in [(drawn.model_input, again.model_input), (drawn.target, again.target)]:
        assert torch.equal(a, b)
    assert torch.equal(drawn.timesteps, again.timesteps)

    fixed = objective.noise_at(x0, noise, 0.7)  # one level for the whole batch
    if kind == "flow":
        assert torch.allclose(fixed.model_input, 0.3 * x0 + 0.7 * noise) and torch.equal(
            fixed.target, noise - x0
        )
    else:
        t = torch.full((3,), round(0.7 * 999))
        assert torch.equal(fixed.timesteps, t)
        ref = DDPMScheduler(**DIFFUSION_DEFAULTS, prediction_type=kind)
        assert torch.allclose(fixed.model_input, ref.add_noise(x0, noise, t))


def _masks():
    from easyanimate.data.masks import MaskConfig

    return MaskConfig()


@pytest.mark.parametrize(
    "mode,kind,extra",
    [
        ("t2i", "image", {}),
        ("t2v", "video", {}),
        ("lora", "video", {"learning_rate": 5e-3}),
        ("motion_lora", "video", {"learning_rate": 5e-3}),
        ("inpaint", "video", {}),
    ],
)
def test_every_mode_learns(tmp_path, base_pipeline, shapes_dir, mode, kind, extra):
    cfg = config(tmp_path / "run", base_pipeline, shapes_dir, mode=mode, **extra)
    base = VideoTransformer3DModel.from_pretrained(os.path.join(base_pipeline, "transformer"))
    if mode == "inpaint":
        base.widen_inputs(9)
    before = eval_loss(base, base_pipeline, shapes_dir, cfg, kind)
    result = train(cfg)
    if mode in ("lora", "motion_lora"):
        pipe = EasyAnimatePipeline.from_pretrained(base_pipeline)
        load_lora(pipe, result["outputs"]["lora"], weight=1.0)
        trained = pipe.transformer
    else:
        trained = VideoTransformer3DModel.from_pretrained(
            os.path.join(result["outputs"]["pipeline"], "transformer")
        )
    after = eval_loss(trained, base_pipeline, shapes_dir, cfg, kind)
    assert after < 0.9 * before, (mode, before, after)


def _state(path):
    return VideoTransformer3DModel.from_pretrained(path).state_dict()


def test_motion_only_training_leaves_spatial_weights_bit_identical(tmp_path, base_pipeline, shapes_dir):
    result = train(config(tmp_path, base_pipeline, shapes_dir, mode="t2v", t2v_stage=2, max_steps=3))
    before = _state(os.path.join(base_pipeline, "transformer"))
    after = _state(os.path.join(result["outputs"]["pipeline"], "transformer"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("motion_modules.") for k in changed)
    assert os.path.isfile(result["outputs"]["motion_module"])


def test_lora_training_keeps_base_and_loads_in_the_cli(tmp_path, base_pipeline, shapes_dir):
    base_before = _state(os.path.join(base_pipeline, "transformer"))
    result = train(
        config(tmp_path / "run", base_pipeline, shapes_dir, mode="lora", max_steps=3, learning_rate=5e-2)
    )
    lora = result["outputs"]["lora"]
    from safetensors.torch import load_file

    keys = list(load_file(lora))
    assert keys and all("lora_" in k and "motion_modules" not in k for k in keys)
    assert all(
        torch.equal(v, base_before[k]) for k, v in _state(os.path.join(base_pipeline, "transformer")).items()
    )
    out = tmp_path / "samples"
    common = ["predict_t2v.py", "--model", base_pipeline, "--prompt", "a red circle", "--num-frames", "5"]
    common += ["--height", "32", "--width", "32", "--steps", "2", "--output-dir", str(out)]
    for extra in ([], ["--lora", lora, "--lora-weight", "1.0"]):
        res = run_python(*common, *extra)
        assert res.returncode == 0, res.stderr[-2000:]
    from easyanimate.data.video_io import read_frames

    plain, styled = read_frames(str(out / "0000.mp4")), read_frames(str(out / "0001.mp4"))
    assert np.abs(plain.astype(int) - styled.astype(int)).max() > 0
    assert json.load(open(out / "0001.json"))["lora"] == lora


@pytest.mark.parametrize(
    "objective,extra,scheduler",
    [
        (
            "v_prediction",
            {"objective.zero_terminal_snr": "true", "objective.snr_gamma": 5.0},
            "DPMSolverMultistepScheduler",
        ),
        ("flow", {"objective.flow_shift": 2.0}, "FlowMatchEulerDiscreteScheduler"),
        ("flow", {"objective.pyramid_stages": 2}, "PyramidFlowScheduler"),  # spatial pyramid: 2 sizes
    ],
)
def test_each_objective_trains_and_saves_its_sampler(
    tmp_path, base_pipeline, shapes_dir, objective, extra, scheduler
):
    cfg = config(
        tmp_path / "run", base_pipeline, shapes_dir, mode="t2i", **{"objective.kind": objective}, **extra
    )
    base = VideoTransformer3DModel.from_pretrained(os.path.join(base_pipeline, "transformer"))
    before = eval_loss(base, base_pipeline, shapes_dir, cfg, "image")
    result = train(cfg)
    folder = result["outputs"]["pipeline"]
    after = eval_loss(
        VideoTransformer3DModel.from_pretrained(os.path.join(folder, "transformer")),
        base_pipeline,
        shapes_dir,
        cfg,
        "image",
    )
    assert after < 0.9 * before, (before, after)
    sched = json.load(open(os.path.join(folder, "scheduler", "scheduler_config.json")))
    assert sched["_class_name"] == scheduler
    if objective != "flow":
        assert sched["prediction_type"] == objective and sched["rescale_betas_zero_snr"] is True
    pipe = EasyAnimatePipeline.from_pretrained(folder)  # the saved pipeline samples with its matching sampler
    pipe.set_progress_bar_config(disable=True)
    assert np.isfinite(
        pipe("a red circle", num_frames=1, height=32, width=32, num_inference_steps=2).frames
    ).all()


def test_accumulation_ema_and_validation_outputs(tmp_path, base_pipeline, shapes_dir):
    cfg = config(
        tmp_path,
        base_pipeline,
        shapes_dir,
        mode="t2v",
        t2v_stage=3,
        max_steps=2,
        gradient_accumulation_steps=2,
        ema_decay=0.9,
        **{"validation.steps": 2},
        gradient_checkpointing="true",
        lr_warmup_steps=4,
    )
    result = train(cfg)
    lrs = [h["lr"] for h in result["history"]]
    assert (
        len(lrs) == 2 and lrs[0] < lrs[1] < cfg.optimization.learning_rate
    )  # warming up, one step per 2 micro-batches
    assert os.listdir(tmp_path / "validation" / "step-00000002")
    assert os.listdir(tmp_path / "tensorboard")
    ckpt = os.listdir(tmp_path / "checkpoints" / "checkpoint-00000002")
    assert {"ema.safetensors", "ema.json"} <= set(ckpt)  # the EMA travels with the checkpoint, unpickled
    # the checkpoint serves inference as it is: its transformer/ holds the EMA weights the export ships
    served = _state(tmp_path / "checkpoints" / "checkpoint-00000002" / "transformer")
    shipped = _state(os.path.join(result["outputs"]["pipeline"], "transformer"))
    assert served.keys() == shipped.keys() and all(torch.equal(served[k], shipped[k]) for k in served)
    assert all(np.isfinite(h["grad_norm"]) for h in result["history"])
    out = tmp_path / "from_checkpoint"
    res = run_python(
        "predict_t2v.py",
        "--model",
        base_pipeline,
        "--transformer",
        str(tmp_path / "checkpoints" / "checkpoint-00000002" / "transformer"),
        "--prompt",
        "a red circle",
        "--num-frames",
        "5",
        "--height",
        "32",
        "--width",
        "32",
        "--steps",
        "2",
        "--output-dir",
        str(out),
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert read_frames(str(out / "0000.mp4")).shape == (5, 32, 32, 3)


def test_help_lists_every_key_and_logging_can_be_off(tmp_path, base_pipeline, shapes_dir):
    from easyanimate.config import describe_keys

    res = run_python("scripts/train.py", "--help")
    assert res.returncode == 0
    rows = describe_keys(TrainConfig)
    assert len(rows) > 60
    for key, type_name, default, meaning in rows:
        assert f"  {key} ({type_name}, default {default})" in res.stdout, key
        assert meaning, f"{key} has no meaning in --help"
    result = train(
        config(
            tmp_path,
            base_pipeline,
            shapes_dir,
            mode="t2i",
            max_steps=2,
            **{"logging.report_to": "none", "validation.steps": 0},
        )
    )
    assert len(result["history"]) == 2 and os.path.isdir(result["outputs"]["pipeline"])
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "validation").exists()
    with pytest.raises(ConfigError, match="logging.report_to must be one of"):
        config(tmp_path / "bad", base_pipeline, shapes_dir, **{"logging.report_to": "mlflw"})


def test_two_processes_see_different_samples(tmp_path, base_pipeline, shapes_dir):
    # 8 videos, batches of 2, 2 ranks: one epoch is 2 steps per rank; within an epoch shares are disjoint
    args = overrides(
        tmp_path, base_pipeline, shapes_dir, mode="t2v", max_steps=2, **{"logging.sample_indices": "true"}
    )
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "scripts/train.py"]
    res = run_command([*launch, *args], timeout=600, env={**os.environ, "ACCELERATE_USE_CPU": "true"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "MULTI_CPU" in res.stderr
    seen = []
    for rank in (0, 1):
        with open(tmp_path / f"samples_rank{rank}.jsonl") as fh:
            seen.append({i for line in fh for i in json.loads(line)["indices"]})
    assert seen[0] and seen[1] and not seen[0] & seen[1]


@pytest.mark.parametrize("mode", [{"mode": "t2v", "t2v_stage": 3}, {"mode": "inpaint"}])
def test_two_processes_train_mixed_images_and_videos(tmp_path, base_pipeline, shapes_dir, mode):
    """DDP on images + videos: every step is one kind on both ranks (an image skips the motion modules), so
    the reduction never waits for a gradient that one rank did not make."""
    args = overrides(
        tmp_path, base_pipeline, shapes_dir, max_steps=5, **mode, **{"logging.sample_indices": "true"}
    )
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "scripts/train.py"]
    res = run_command([*launch, *args], timeout=600, env={**os.environ, "ACCELERATE_USE_CPU": "true"})
    assert res.returncode == 0, res.stderr[-3000:]
    records = load_records("normal", os.path.join(shapes_dir, "metadata.json"))
    per_rank = []
    for rank in (0, 1):
        with open(tmp_path / f"samples_rank{rank}.jsonl") as fh:
            per_rank.append([{records[i].type for i in json.loads(line)["indices"]} for line in fh])
    assert len(per_rank[0]) == len(per_rank[1]) == 5
    assert per_rank[0] == per_rank[1] and {"image"} in per_rank[0] and {"video"} in per_rank[0]
    assert os.path.isfile(tmp_path / "pipeline" / "model_index.json")


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, base_pipeline, shapes_dir):
    common = {"mode": "t2v", "t2v_stage": 3, "max_steps": 6, "checkpointing.steps": 2, "validation.steps": 5}
    common["validation.inference_steps"] = 30  # slow step 5, so the kill lands between checkpoints 4 and 6
    straight = train(config(tmp_path / "straight", base_pipeline, shapes_dir, **common))
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "scripts/train.py", *overrides(killed_dir, base_pipeline, shapes_dir, **common)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = killed_dir / "checkpoints" / "checkpoint-00000004"
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (killed_dir / "pipeline").exists()
    resumed = train(
        config(killed_dir, base_pipeline, shapes_dir, **{"checkpointing.resume_from": "latest"}, **common)
    )
    assert len(resumed["history"]) == 2 and resumed["start_step"] == 4  # steps 5 and 6 only
    a = _state(os.path.join(straight["outputs"]["pipeline"], "transformer"))
    b = _state(os.path.join(resumed["outputs"]["pipeline"], "transformer"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_config_and_nan_loss(tmp_path, base_pipeline, shapes_dir):
    with pytest.raises(ConfigError, match="unknown config key data.bach_size"):
        load_config(TrainConfig, None, ["data.bach_size=2"])
    with pytest.raises(ConfigError, match="mode must be one of"):
        load_config(TrainConfig, None, ["mode=t3v"])
    res = run_python("scripts/train.py", "lora.rnk=4")
    assert res.returncode == 2 and "lora.rnk" in res.stderr
    cfg = config(
        tmp_path, base_pipeline, shapes_dir, mode="t2i", learning_rate=1e12, max_grad_norm=1e30, max_steps=10
    )
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train(cfg)


def test_every_shipped_config_loads():
    """Every YAML under config/ loads through its typed config (accelerate's own files through accelerate)."""
    import glob

    import yaml
    from accelerate.commands.config.config_args import load_config_from_file

    from easyanimate.preprocess.config import PreprocessConfig
    from easyanimate.training.vae.config import VAETrainConfig

    paths = sorted(glob.glob(os.path.join(ROOT, "config", "**", "*.yaml"), recursive=True))
    loaded = []
    for path in paths:
        name = os.path.relpath(path, os.path.join(ROOT, "config"))
        if name.startswith("accelerate/"):
            assert load_config_from_file(path).distributed_type, name
        elif name == "preprocess.yaml":
            load_config(PreprocessConfig, path)
        elif name.startswith("vae/") or os.path.basename(name).startswith("vae_"):
            load_config(VAETrainConfig, path)
        else:
            assert yaml.safe_load(open(path))["mode"], name
            load_config(TrainConfig, path)
        loaded.append(name)
    assert {"demo/t2v.yaml", "demo/vae_stage1.yaml", "preprocess.yaml", "train_t2v.yaml"} <= set(loaded)


def test_train_t2v_sh_as_the_readme_shows(tmp_path, base_pipeline, shapes_dir):
    env = script_env(MODEL_NAME=base_pipeline, DATASET_NAME=shapes_dir, OUTPUT_DIR=str(tmp_path / "t2v"))
    args = [
        "optimization.max_steps=2",
        "data.base_size=32",
        "data.num_frames=9",
        "data.batch_size=2",
        "validation.steps=2",
    ]
    args += ["validation.num_frames=5", "validation.inference_steps=2", "validation.size=32"]
    res = run_command(["sh", "scripts/train_t2v.sh", *args], timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert os.path.isfile(tmp_path / "t2v" / "motion_module" / "diffusion_pytorch_model.safetensors")
    assert os.path.isfile(tmp_path / "t2v" / "pipeline" / "model_index.json")


def test_latent_cache_trains_like_pixels(tmp_path, base_pipeline, shapes_dir):
    """precompute.py then training from the cache reaches the weights of training from pixels."""
    common = dict(
        mode="t2v", t2v_stage=3, max_steps=3, **{"data.random_crop": "false", "data.caption_dropout": 0.3}
    )
    args = overrides(
        tmp_path / "cached", base_pipeline, shapes_dir, latent_cache=tmp_path / "cache", **common
    )
    res = run_python("scripts/precompute.py", *args, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "cached 12 of 12 records" in res.stdout  # stage 3: 8 videos + 4 images
    cached = train(load_config(TrainConfig, None, args))
    pixels = train(config(tmp_path / "pixels", base_pipeline, shapes_dir, **common))

    def cfg_of(pipeline):
        return config(tmp_path / "cfg", pipeline, shapes_dir, latent_cache=tmp_path / "cache", **common)

    a = _state(os.path.join(cached["outputs"]["pipeline"], "transformer"))
    b = _state(os.path.join(pixels["outputs"]["pipeline"], "transformer"))
    base = _state(os.path.join(base_pipeline, "transformer"))
    update = torch.cat([(a[k] - base[k]).flatten() for k in a])
    diff = torch.cat([(a[k] - b[k]).flatten() for k in a])
    # equal up to float noise (batch-1 vs batch-2 VAE encodes) that Adam's normalised steps can amplify:
    # measured 2.4e-4 of the update; a cache holding other crops or captions differs by order 1
    assert update.norm() > 0.1 and diff.norm() / update.norm() < 2e-3 and diff.abs().max() < 1e-3
    with pytest.raises(ValueError, match="other settings"):
        train(
            config(
                tmp_path / "other",
                base_pipeline,
                shapes_dir,
                latent_cache=tmp_path / "cache",
                **{**common, "data.num_frames": 5},
            )
        )
    # the cache is tied to the encoders, not to the pipeline's folder: a later stage's pipeline (a new folder,
    # another transformer, the same VAE and text encoder) reuses it; one with a retrained VAE does not
    later = tmp_path / "later_stage"  # a stage after the next: its pipeline saved again after prompting
    pipe = EasyAnimatePipeline.from_pretrained(cached["outputs"]["pipeline"])
    pipe.encode_prompt("a red circle moving left on a gray background")
    pipe.save_pretrained(later)
    kind = strategy_of(cfg_of(later)).data
    CachedLatents(str(tmp_path / "cache"), cfg_of(later), kind)
    vae_file = next(p for p in (later / "vae").iterdir() if p.suffix == ".safetensors")
    weights = load_file(vae_file)
    name = next(iter(weights))
    save_file({**weights, name: weights[name] + 1e-3}, vae_file)
    with pytest.raises(ValueError, match="encoders"):
        CachedLatents(str(tmp_path / "cache"), cfg_of(later), kind)
    # a cache made before this keying (the pipeline's path in its manifest) still serves that pipeline only
    manifest_path = tmp_path / "cache" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["pipeline"] = os.path.abspath(base_pipeline)
    del manifest["encoders"]
    manifest_path.write_text(json.dumps(manifest))
    CachedLatents(str(tmp_path / "cache"), cfg_of(base_pipeline), kind)
    with pytest.raises(ValueError, match="encoders"):
        CachedLatents(str(tmp_path / "cache"), cfg_of(later), kind)


def _text_state(pipeline_dir):
    return load_text_encoder(pipeline_dir).model.state_dict()


def test_text_encoder_trains_from_the_cache_as_from_pixels(tmp_path, base_pipeline, shapes_dir):
    """train_text_encoder: the exported pipeline carries the trained encoder; cached runs feed it the same
    captions (dropout included) as pixel runs, so both reach the same weights."""
    common = dict(
        mode="t2i",
        max_steps=3,
        train_text_encoder="true",
        **{"data.random_crop": "false", "data.caption_dropout": 0.3},
    )
    args = overrides(
        tmp_path / "cached", base_pipeline, shapes_dir, latent_cache=tmp_path / "cache", **common
    )
    assert run_python("scripts/precompute.py", *args, timeout=600).returncode == 0
    cached = train(load_config(TrainConfig, None, args))
    pixels = train(config(tmp_path / "pixels", base_pipeline, shapes_dir, **common))
    a, b = (_text_state(r["outputs"]["pipeline"]) for r in (cached, pixels))
    base = _text_state(base_pipeline)
    update = torch.cat([(a[k] - base[k]).flatten() for k in a])
    diff = torch.cat([(a[k] - b[k]).flatten() for k in a])
    assert update.norm() > 0.01 and diff.norm() / update.norm() < 1e-2
    with pytest.raises(ValueError, match="train_text_encoder applies to t2i and t2v"):
        config(tmp_path / "lora", base_pipeline, shapes_dir, mode="lora", train_text_encoder="true")


def test_trained_text_encoder_keeps_training_after_a_validation(tmp_path, base_pipeline, shapes_dir):
    """Validation wraps the encoder for prompt encoding; wrapping must not freeze it: every encoder tensor
    still changes in the steps after a validation."""
    from safetensors.torch import load_file

    cfg = config(
        tmp_path,
        base_pipeline,
        shapes_dir,
        mode="t2i",
        max_steps=4,
        train_text_encoder="true",
        **{"checkpointing.steps": 2, "validation.steps": 2},
    )
    result = train(cfg)
    after_validation = load_file(
        os.path.join(tmp_path, "checkpoints", "checkpoint-00000002", "model_1.safetensors")
    )
    final = load_text_encoder(result["outputs"]["pipeline"]).model
    names = [n for n, _ in final.named_parameters()]
    assert os.path.isdir(os.path.join(tmp_path, "validation", "step-00000002"))  # a validation ran at step 2
    changed = [n for n, p in final.named_parameters() if not torch.equal(p, after_validation[n])]
    assert len(names) > 10 and changed == names


def test_bf16_run_holds_frozen_models_in_bf16_and_ships_them_unchanged(tmp_path, base_pipeline, shapes_dir):
    """mixed_precision=bf16: the frozen VAE and text encoder run in bf16 (half the memory); training stays finite,
    and the exported pipeline carries the original fp32 VAE and text encoder, bit for bit."""
    from easyanimate.models.slice_vae import SliceVAE
    from easyanimate.training import trainer as trainer_module

    seen = {}
    original = trainer_module.TextFeatures.__init__

    def spy(self, encoder, trained=None, cache_size=1024):
        seen["text"] = next(encoder.model.parameters()).dtype
        original(self, encoder, trained, cache_size)

    trainer_module.TextFeatures.__init__ = spy
    try:
        result = train(
            config(
                tmp_path,
                base_pipeline,
                shapes_dir,
                mode="t2v",
                t2v_stage=3,
                max_steps=3,
                **{"optimization.mixed_precision": "bf16", "data.text_cache_size": 2},
            )
        )
    finally:
        trainer_module.TextFeatures.__init__ = original
    assert seen["text"] == torch.bfloat16
    assert all(np.isfinite(h["loss"]) for h in result["history"])
    folder = result["outputs"]["pipeline"]
    for name, load in (("vae", lambda p: SliceVAE.from_pretrained(p).state_dict()), ("text", _text_state)):
        path = os.path.join(folder, "vae") if name == "vae" else folder
        base = os.path.join(base_pipeline, "vae") if name == "vae" else base_pipeline
        a, b = load(path), load(base)
        assert all(a[k].dtype == torch.float32 and torch.equal(a[k], b[k]) for k in b), name


def test_caption_contrast_term_is_a_hinge_on_the_swapped_word():
    """Only samples noised at least min_level with a swappable word take part; a text-blind model pays the
    margin for each; one far worse with the wrong word pays nothing; gradients reach the model."""
    from easyanimate.diffusion.objectives import NoisedBatch
    from easyanimate.training.config import CaptionContrastConfig
    from easyanimate.training.contrast import contrast_term

    cfg = CaptionContrastConfig(weight=1.0, swaps="direction", margin=0.5, min_level=0.75)
    torch.manual_seed(0)
    x = torch.randn(4, 4, 2, 4, 4)
    target = torch.randn_like(x)
    captions = [
        "a red circle moving left on a gray background",  # takes part
        "a red circle moving right on a gray background",  # level 0.5: below min_level
        "a red circle standing still on a gray background",  # no direction word
        "",  # a dropped caption
    ]
    noised = NoisedBatch(x, torch.tensor([900.0, 500.0, 950.0, 990.0]), target, torch.ones(4))
    w = torch.zeros((), requires_grad=True)

    def encode(caps):  # a feature that says whether the caption moves right
        return torch.tensor([[[float("right" in c)]] for c in caps]), torch.ones(len(caps), 1)

    def blind(xi, t, feats, mask):
        return xi * w

    term = contrast_term(blind, x, noised, x * w, captions, encode, cfg)
    assert term.item() == pytest.approx(0.5 / 4)
    term.backward()
    assert w.grad is not None

    def reads(xi, t, feats, mask):  # exact with "left" (feature 0), far off with the swapped "right"
        return target[: len(xi)] + 10 * feats.reshape(-1, 1, 1, 1, 1) + xi * w

    near = target + 0.1 * torch.randn_like(target)
    assert contrast_term(reads, x, noised, near, captions, encode, cfg).item() == 0.0
    with pytest.raises(ValueError, match="caption text"):
        contrast_term(blind, x, noised, x * w, None, encode, cfg)
    with pytest.raises(ValueError, match="unknown field 'speed'"):
        CaptionContrastConfig(weight=1.0, swaps="speed")
    assert CaptionContrastConfig(swaps={"Left": "right"}).tables() == [{"left": "right"}]
    with pytest.raises(ValueError, match="unknown field 'speed'"):
        CaptionContrastConfig(weight=1.0, swaps=["shape", "speed"])


def test_caption_contrast_with_several_fields_swaps_one_per_sample():
    """swaps as a list of fields: each taking sample gets exactly one word swapped, from a field its caption has,
    every listed field is drawn, and a caption with only one of them always swaps that one."""
    from easyanimate.diffusion.objectives import NoisedBatch
    from easyanimate.training.config import CaptionContrastConfig
    from easyanimate.training.contrast import contrast_term

    cfg = CaptionContrastConfig(weight=1.0, swaps=["direction", "shape"], min_level=0.0)
    captions = [
        "a red circle moving left on a gray background",
        "a red square standing still on a gray background",
    ]
    x = torch.randn(2, 4, 2, 4, 4)
    noised = NoisedBatch(x, torch.tensor([900.0, 900.0]), torch.randn_like(x), torch.ones(2))
    seen: list[str] = []

    def encode(caps):
        seen.extend(caps)
        return torch.zeros(len(caps), 1, 1), torch.ones(len(caps), 1)

    torch.manual_seed(0)
    for _ in range(40):
        contrast_term(lambda xi, t, f, m: xi, x, noised, x, captions, encode, cfg)
    first, second = seen[0::2], seen[1::2]
    assert set(first) == {
        "a red circle moving right on a gray background",  # direction swapped
        "a red square moving left on a gray background",  # shape swapped
    }
    assert set(second) == {"a red triangle standing still on a gray background"}  # no direction word


def test_caption_contrast_trains_from_pixels_and_from_the_cache(tmp_path, base_pipeline, shapes_dir):
    """contrast.weight > 0 changes what training does (the same run without it reaches other weights), from
    pixels and from a latent cache (whose items then carry their caption text) alike."""
    common = dict(
        mode="t2v",
        t2v_stage=3,
        max_steps=3,
        **{"data.random_crop": "false", "contrast.min_level": 0.0},
    )
    args = overrides(
        tmp_path / "cached",
        base_pipeline,
        shapes_dir,
        latent_cache=tmp_path / "cache",
        **common,
        **{"contrast.weight": 1.0},
    )
    assert run_python("scripts/precompute.py", *args, timeout=600).returncode == 0
    cached = train(load_config(TrainConfig, None, args))
    pixels = train(
        config(tmp_path / "pixels", base_pipeline, shapes_dir, **common, **{"contrast.weight": 1.0})
    )
    plain = train(config(tmp_path / "plain", base_pipeline, shapes_dir, **common))
    a, b, c = (_state(os.path.join(r["outputs"]["pipeline"], "transformer")) for r in (cached, pixels, plain))
    update = torch.cat([(b[k] - c[k]).flatten() for k in b])
    diff = torch.cat([(a[k] - b[k]).flatten() for k in a])
    assert update.norm() > 1e-3  # the term acts
    # logged every step (0 for a batch of images or still clips: no direction word), never without the term
    assert max(h["contrast"] for h in pixels["history"]) > 0 and "contrast" not in plain["history"][0]
    assert diff.norm() < 0.05 * update.norm()  # and the cache feeds it the same captions as pixels
