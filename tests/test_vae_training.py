"""Slice VAE training: loss goes down, stage 2 freezes the encoder, resume is exact, bad input is handled."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from conftest import run_command, run_python, script_env

from easyanimate.config import ConfigError, load_config
from easyanimate.data.video_io import read_frames
from easyanimate.models.slice_vae import SliceVAE
from easyanimate.training.vae.config import VAETrainConfig
from easyanimate.training.vae.trainer import encoder_digest, load_vae, train_vae


def config(tmp_path, root, **overrides) -> VAETrainConfig:
    base = [
        f"output_dir={tmp_path}",
        f"data.root={root}",
        "data.num_frames=9",
        "data.size=32",
        "data.batch_size=2",
        "learning_rate=2e-3",
        "max_steps=4",
        "checkpointing_steps=2",
        "validation_steps=100",
        "encode_slice_frames=4",
        "decode_slice_latents=1",
    ]
    return load_config(VAETrainConfig, None, base + [f"{k}={v}" for k, v in overrides.items()])


@torch.no_grad()
def recon_l1(vae: SliceVAE, clip: torch.Tensor) -> float:
    vae.eval()
    return (vae.decode(vae.encode(clip).latent_dist.mode()).sample - clip).abs().mean().item()


@pytest.fixture(scope="module")
def one_clip(tmp_path_factory) -> str:
    """One 9-frame clip on a white background: a fresh VAE reconstructs it badly (outputs ~0 = gray)."""
    import numpy as np

    from easyanimate.data.synthetic import Scene, render
    from easyanimate.data.video_io import write_video

    root = tmp_path_factory.mktemp("one_clip")
    frames = render(Scene("circle", "red", "right", "white"), 32, 9, np.random.default_rng(0))
    write_video(str(root / "clip.mp4"), frames)
    return str(root)


def test_stage1_reduces_reconstruction_loss_and_writes_outputs(tmp_path, one_clip):
    from easyanimate.data.folder import MediaFolder
    from easyanimate.models.slice_vae import build_vae

    clip = MediaFolder(one_clip, 9, 32).validation_clip()
    cfg = config(
        tmp_path / "run",
        one_clip,
        max_steps=30,
        learning_rate=1e-3,
        checkpointing_steps=15,
        validation_steps=30,
        **{"data.batch_size": 1, "data.image_ratio": 0.0},
    )
    torch.manual_seed(cfg.seed)  # the run's own starting weights (set_seed(seed) then the preset)
    before = recon_l1(build_vae(cfg.model), clip)
    result = train_vae(cfg)
    after = recon_l1(SliceVAE.from_pretrained(result["final_dir"]), clip)
    assert after < 0.3 * before, (before, after)  # measured: 0.88 -> 0.12
    # validation video: original | reconstruction side by side, every frame
    video = read_frames(str(tmp_path / "run" / "validation" / "step-00000030.mp4"))
    assert video.shape == (9, 32, 64, 3)
    assert result["history"][-1]["val/psnr"] > 10
    assert os.listdir(tmp_path / "run" / "tensorboard")
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == [
        "checkpoint-00000015",
        "checkpoint-00000030",
    ]


def test_stage2_keeps_encoder_bit_identical(tmp_path, shapes_dir):
    stage1 = train_vae(config(tmp_path / "s1", shapes_dir, max_steps=2))
    vae1 = SliceVAE.from_pretrained(stage1["final_dir"])
    stage2 = train_vae(config(tmp_path / "s2", shapes_dir, stage=2, model=stage1["final_dir"], max_steps=3))
    vae2 = SliceVAE.from_pretrained(stage2["final_dir"])
    assert encoder_digest(vae1) == encoder_digest(vae2)
    changed = [
        k for k, v in vae1.decoder.state_dict().items() if not torch.equal(v, vae2.decoder.state_dict()[k])
    ]
    assert changed  # the decoder did train


def test_resume_reaches_the_same_weights(tmp_path, shapes_dir):
    full = train_vae(config(tmp_path / "full", shapes_dir, max_steps=4))
    # the same run stopped after its step-2 checkpoint, then resumed
    part = config(tmp_path / "part", shapes_dir, max_steps=2)
    train_vae(part)
    shutil.rmtree(tmp_path / "part" / "vae")
    resumed = train_vae(config(tmp_path / "part", shapes_dir, max_steps=4, resume_from_checkpoint="latest"))
    assert resumed["start_step"] == 2 and len(resumed["history"]) == 2
    a = SliceVAE.from_pretrained(full["final_dir"]).state_dict()
    b = SliceVAE.from_pretrained(resumed["final_dir"]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_corrupt_files_are_skipped_and_counted(tmp_path, shapes_dir):
    root = tmp_path / "data"
    shutil.copytree(shapes_dir, root)
    (root / "videos" / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 50)
    (root / "videos" / "empty.mp4").write_bytes(b"")
    result = train_vae(config(tmp_path / "run", str(root), max_steps=12, **{"data.image_ratio": 0.0}))
    assert len(result["history"]) == 12
    assert {os.path.basename(p) for p in result["skipped"]} <= {"broken.mp4", "empty.mp4"}
    assert result["skipped"]  # at least one bad file was drawn, skipped and counted


def test_non_finite_loss_stops_with_a_clear_error(tmp_path, shapes_dir):
    with pytest.raises(FloatingPointError, match="non-finite VAE loss"):
        train_vae(config(tmp_path / "run", shapes_dir, learning_rate=1e12, max_steps=8, max_grad_norm=1e30))


def test_bad_config_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="loss.kl_wieght"):
        load_config(VAETrainConfig, None, ["loss.kl_wieght=1e-6"])
    with pytest.raises(ConfigError, match="max_steps: expected int"):
        load_config(VAETrainConfig, None, ["max_steps=many"])
    with pytest.raises(ConfigError, match="1 \\+ 4k"):
        load_config(VAETrainConfig, None, ["data.num_frames=8"])
    yaml_path = tmp_path / "bad.yaml"
    yaml_path.write_text("stage: 1\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*learning_rat"):
        load_config(VAETrainConfig, str(yaml_path))


def test_model_options_override_the_preset(tmp_path):
    cfg = load_config(VAETrainConfig, None, ["model_options.latent_channels=8"])
    vae = load_vae(cfg.model, cfg.model_options)
    assert vae.config.latent_channels == 8
    assert vae.encode(torch.zeros(1, 3, 5, 16, 16)).latent_dist.mode().shape == (1, 8, 2, 2, 2)
    vae.save_pretrained(str(tmp_path / "vae"))
    with pytest.raises(ValueError, match="preset only"):  # a trained folder's shape is fixed
        load_vae(str(tmp_path / "vae"), {"latent_channels": 4})


def test_train_vae_sh_runs_both_stages(tmp_path, shapes_dir):
    """The shell entry point as the README shows it: sh scripts/train_vae.sh, through accelerate launch."""
    env = script_env(DATA_ROOT=shapes_dir, OUTPUT_DIR=str(tmp_path / "vae"))
    overrides = [
        "max_steps=2",
        "data.num_frames=9",
        "data.size=32",
        "validation_steps=2",
        "checkpointing_steps=2",
    ]
    res = run_command(["sh", "scripts/train_vae.sh", *overrides], timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    for stage in ("stage1", "stage2"):
        assert os.path.isfile(tmp_path / "vae" / stage / "vae" / "config.json")
    assert SliceVAE.from_pretrained(str(tmp_path / "vae" / "stage2" / "vae")).config.latent_channels == 4
    # STAGE2=0 (the demo recipe's VAE): stage 1 only
    env = script_env(DATA_ROOT=shapes_dir, OUTPUT_DIR=str(tmp_path / "one"), STAGE2="0", LAUNCH="python")
    res = run_command(["sh", "scripts/train_vae.sh", *overrides], timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert os.path.isfile(tmp_path / "one" / "stage1" / "vae" / "config.json")
    assert not (tmp_path / "one" / "stage2").exists()


def _fake_vgg16(path) -> str:
    """Random weights in torchvision's vgg16 state-dict layout (the real ones are the user's)."""
    from torch import nn

    from easyanimate.training.vae.losses import _VGG16

    state, c, i = {}, 3, 0
    for v in _VGG16:
        if v == "M":
            i += 1
            continue
        conv = nn.Conv2d(c, v, 3, padding=1)
        state[f"features.{i}.weight"], state[f"features.{i}.bias"] = conv.weight.data, conv.bias.data
        c, i = v, i + 2
    state["classifier.0.weight"] = torch.zeros(2, 2)  # ignored, as in a full vgg16 file
    torch.save(state, path)
    return str(path)


def test_vgg_feature_loss(tmp_path):
    from easyanimate.training.vae.losses import VGGFeatureLoss

    loss = VGGFeatureLoss(_fake_vgg16(tmp_path / "vgg16.pth"))
    x = torch.rand(1, 3, 2, 32, 32) * 2 - 1
    assert loss(x, x).item() == 0.0
    assert loss(x, x.flip(-1)).item() > 0
    with pytest.raises(FileNotFoundError, match="perceptual"):
        VGGFeatureLoss(str(tmp_path / "none.pth"))


@pytest.mark.parametrize(
    "options",
    [
        {"loss.disc_start": 1, "loss.disc_channels": 8},
        {"mixed_precision": "bf16", "gradient_checkpointing": "true"},
        {"loss.perceptual_weights": "VGG"},
    ],
    ids=["adversarial", "bf16+checkpointing", "perceptual"],
)
def test_optional_losses_and_precision_run(tmp_path, shapes_dir, options):
    if options.get("loss.perceptual_weights") == "VGG":
        options = {"loss.perceptual_weights": _fake_vgg16(tmp_path / "vgg16.pth")}
    result = train_vae(config(tmp_path / "run", shapes_dir, max_steps=3, checkpointing_steps=3, **options))
    last = result["history"][-1]
    assert all(torch.isfinite(torch.tensor(v)) for v in last.values())
    if "loss.disc_start" in options:
        assert "d_loss" in last and "g_adv" in last and "g_adv" not in result["history"][0]
    if "loss.perceptual_weights" in options:
        assert last["perceptual"] > 0


def test_two_process_cpu_run(tmp_path, shapes_dir):
    """Two CPU processes (gloo DDP): both ranks train and checkpoint.

    `accelerate launch --cpu --num_processes 2` runs ONE process in accelerate 1.15 (it only spawns CPU
    workers through mpirun), so the processes come from torchrun, which accelerate picks up as MULTI_CPU.
    """
    launch = ["-m", "torch.distributed.run", "--nproc_per_node", "2"]
    args = [f"data.root={shapes_dir}", f"output_dir={tmp_path}", "max_steps=2", "checkpointing_steps=2"]
    args += ["validation_steps=2", "data.size=32", "data.num_frames=9"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true"}
    res = run_python(*launch, "scripts/train_vae.py", *args, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "MULTI_CPU" in res.stderr + res.stdout
    ckpt = tmp_path / "checkpoints" / "checkpoint-00000002"
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= set(os.listdir(ckpt))
    # the saved VAE is the checkpointed, trained one: it moved from its seeded init, and stayed finite
    from accelerate.utils import set_seed
    from safetensors.torch import load_file

    from easyanimate.models.slice_vae import build_vae

    saved = SliceVAE.from_pretrained(str(tmp_path / "vae")).state_dict()
    checkpointed = {k.removeprefix("vae."): v for k, v in load_file(ckpt / "model.safetensors").items()}
    set_seed(0)
    init = build_vae("tiny").state_dict()
    assert saved.keys() == checkpointed.keys() == init.keys()
    assert all(torch.equal(saved[k], checkpointed[k]) for k in saved)
    assert all(torch.isfinite(v).all() for v in saved.values())
    moved = [(saved[k] - init[k]).abs().max().item() for k in saved]
    assert sum(m > 0 for m in moved) > len(saved) // 2 and max(moved) < 0.01  # 2 small steps from that init
