"""Training on several processes the way users launch it: DDP (torchrun), DeepSpeed ZeRO-2 / ZeRO-3 and FSDP
(accelerate launch with the shipped configs), 2 CPU processes on gloo, tiny models, mixed images and videos."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
import yaml
from conftest import ROOT, make_pipeline, run_command, tiny_run
from safetensors.torch import load_file

pytest.importorskip("deepspeed")

MIXED = {"mode": "t2v", "t2v_stage": "3"}


@pytest.fixture(scope="module")
def base_pipeline(tmp_path_factory) -> str:
    return make_pipeline(tmp_path_factory.mktemp("base"))


def _args(out, base_pipeline, shapes_dir, **kw) -> list[str]:
    settings = {
        **tiny_run(out, base_pipeline, shapes_dir),
        "optimization.max_steps": 3,
        "validation.steps": 0,
        "logging.steps": 1,
        **MIXED,
        **kw,
    }
    return [f"{k}={v}" for k, v in settings.items()]


def _deepspeed_config(tmp_path, mixed_precision="no", accumulation=1, stage=2) -> str:
    """The shipped ZeRO-2 / ZeRO-3 config, for 2 CPU processes."""
    with open(os.path.join(ROOT, "config", "accelerate", f"deepspeed_zero{stage}.yaml")) as fh:
        config = yaml.safe_load(fh)
    config.update(num_processes=2, use_cpu=True, mixed_precision=mixed_precision)
    config["deepspeed_config"]["gradient_accumulation_steps"] = accumulation
    path = tmp_path / f"zero{stage}-{mixed_precision}-{accumulation}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _fsdp_config(tmp_path, state_dict_type="SHARDED_STATE_DICT") -> str:
    """The shipped FSDP config, for 2 CPU processes in fp32."""
    with open(os.path.join(ROOT, "config", "accelerate", "fsdp.yaml")) as fh:
        config = yaml.safe_load(fh)
    config.update(num_processes=2, use_cpu=True, mixed_precision="no")
    config["fsdp_config"]["fsdp_state_dict_type"] = state_dict_type
    path = tmp_path / f"fsdp-{state_dict_type}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _launch(kind: str, config: str | None, args: list[str], env: dict[str, str] | None = None):
    env = {k: v for k, v in (env or os.environ).items() if k != "ACCELERATE_USE_CPU"}
    if kind == "ddp":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "scripts/train.py"]
        env["ACCELERATE_USE_CPU"] = "true"
        expected = "process 1 of 2 (DistributedType.MULTI_CPU)"
    else:
        accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
        cmd = [accelerate, "launch", "--config_file", config, "scripts/train.py"]
        if kind.startswith("fsdp"):  # the CPU processes then get their FSDP wrapping by hand (scaffold.py)
            env["ACCELERATE_USE_CPU"] = "true"
            expected = "process 1 of 2 (DistributedType.FSDP)"
        else:  # ACCELERATE_USE_CPU=true would turn the DeepSpeed launch into plain MULTI_CPU DDP
            expected = "process 1 of 2 (DistributedType.DEEPSPEED)"
    res = run_command([*cmd, *args], timeout=600, env=env)
    assert res.returncode != 0 or expected in res.stderr, res.stderr[-3000:]
    return res


def _losses(out) -> list[float]:
    with open(os.path.join(out, "logs.jsonl")) as fh:
        return [json.loads(line)["train/loss"] for line in fh]


def _weights(out) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(out, "pipeline", "transformer", "diffusion_pytorch_model.safetensors"))


def _relative_difference(wa: dict, wb: dict, base: dict) -> float:
    """|wa - wb| / |wa - base| over all weights (norms). AdamW turns rounding-level gradient differences on
    near-zero gradients into visible per-element differences, so the largest single element varies with the
    reduction order (0.3% to 1.3% of the largest update across runs; a clean-clone CI run failed a 1% bound on
    it) while the whole update does not (about 1e-4 of its norm)."""
    common = [k for k in wa if k in base and wa[k].shape == base[k].shape]
    update = torch.sqrt(sum(((wa[k] - base[k]) ** 2).sum() for k in common)).item()
    assert update > 1e-3, update  # the run trained
    return torch.sqrt(sum(((wa[k] - wb[k]) ** 2).sum() for k in wa)).item() / update


@pytest.mark.parametrize("mode", [MIXED, {"mode": "inpaint"}])
def test_zero2_matches_ddp_with_accumulation(tmp_path, base_pipeline, shapes_dir, mode):
    """fp32 ZeRO-2 and DDP, gradient accumulation 2, images + videos: the same losses, the same weights up to
    reduction-order rounding."""
    runs = {}
    for kind in ("ddp", "zero2"):
        out = tmp_path / kind
        config = _deepspeed_config(tmp_path, accumulation=2) if kind == "zero2" else None
        args = _args(
            out, base_pipeline, shapes_dir, **mode, **{"optimization.gradient_accumulation_steps": 2}
        )
        res = _launch(kind, config, args)
        assert res.returncode == 0, res.stderr[-3000:]
        runs[kind] = out
    a, b = _losses(runs["ddp"]), _losses(runs["zero2"])
    assert len(a) == 3 and a == pytest.approx(b, rel=1e-5)
    base = load_file(os.path.join(base_pipeline, "transformer", "diffusion_pytorch_model.safetensors"))
    wa, wb = _weights(runs["ddp"]), _weights(runs["zero2"])
    assert _relative_difference(wa, wb, base) < 1e-3  # measured 9e-5


def test_zero2_bf16_trains(tmp_path, base_pipeline, shapes_dir):
    """bf16 ZeRO-2 (inputs cast to the engine's dtype) trains to finite losses near fp32's."""
    bf16 = _deepspeed_config(tmp_path, "bf16")
    res = _launch(
        "zero2",
        bf16,
        _args(tmp_path / "bf16", base_pipeline, shapes_dir, **{"optimization.mixed_precision": "bf16"}),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    fp32 = _deepspeed_config(tmp_path)
    res = _launch("zero2", fp32, _args(tmp_path / "fp32", base_pipeline, shapes_dir))
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = _losses(tmp_path / "bf16"), _losses(tmp_path / "fp32")
    assert all(torch.isfinite(torch.tensor(a))) and a == pytest.approx(b, rel=2e-2)


def test_zero2_refuses_a_second_accumulation_setting(tmp_path, base_pipeline, shapes_dir):
    res = _launch(
        "zero2",
        _deepspeed_config(tmp_path, accumulation=1),
        _args(tmp_path / "run", base_pipeline, shapes_dir, **{"optimization.gradient_accumulation_steps": 2}),
    )
    assert res.returncode != 0
    assert (
        "gradient_accumulation_steps is 1 but the run's optimization.gradient_accumulation_steps is 2"
        in res.stderr
    )


def test_gpu_check_runs_at_tiny_size(tmp_path):
    """benchmarks/gpu_check.py (the GPU check, XL/2 on a GPU) runs end to end here at tiny size on CPU."""
    out = tmp_path / "gpu_check.json"
    res = run_command(
        [sys.executable, "benchmarks/gpu_check.py", "--tiny", "--device", "cpu", "--out", str(out)]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())
    train = result["bf16_training"]
    assert train["steps_timed"] >= 1 and train["steps_per_second"] > 0 and 0 < train["mfu"] < 1
    assert train["flops_per_step"] > 3 * 2 * train["parameters"]  # at least forward + backward per token
    zero = result["zero2"]
    assert len(zero["losses"]) == 3 and zero["losses"][-1] < zero["losses"][0]


def test_zero3_matches_ddp_and_gathers_for_validation_and_export(tmp_path, base_pipeline, shapes_dir):
    """ZeRO-3 shards the weights: validation, each checkpoint's transformer/ and the export gather them onto the
    main process; the frozen VAE and T5 load whole. Losses equal DDP's."""
    runs = {}
    for kind, stage in (("ddp", None), ("zero3", 3)):
        out = tmp_path / kind
        config = _deepspeed_config(tmp_path, stage=3) if stage else None
        extra = {"validation.steps": 3, "validation.num_frames": 5, "validation.inference_steps": 2}
        res = _launch(
            kind, config, _args(out, base_pipeline, shapes_dir, **{"checkpointing.steps": 2}, **extra)
        )
        assert res.returncode == 0, res.stderr[-3000:]
        runs[kind] = out
    assert _losses(runs["ddp"]) == pytest.approx(_losses(runs["zero3"]), rel=1e-5)
    base = load_file(os.path.join(base_pipeline, "transformer", "diffusion_pytorch_model.safetensors"))
    wa, wb = _weights(runs["ddp"]), _weights(runs["zero3"])
    assert _relative_difference(wa, wb, base) < 1e-3
    served = load_file(
        runs["zero3"]
        / "checkpoints"
        / "checkpoint-00000002"
        / "transformer"
        / "diffusion_pytorch_model.safetensors"
    )
    assert served.keys() == wb.keys() and all(v.numel() == wb[k].numel() for k, v in served.items())
    assert os.listdir(runs["zero3"] / "validation" / "step-00000003")


SLOW_RANK = """
import os, time
import accelerate

_save = accelerate.Accelerator.save_state


def save_state(self, output_dir=None, **kw):  # rank 1 writes its part of every checkpoint late
    out = _save(self, output_dir, **kw)
    if os.environ.get("RANK") == "1":
        time.sleep(3)
        open(os.path.join(output_dir, "rank1_was_here"), "w").close()
    return out


accelerate.Accelerator.save_state = save_state
"""


def test_a_slow_rank_cannot_break_a_checkpoint(tmp_path, base_pipeline, shapes_dir):
    """Rank 1 finishes writing 3 s after rank 0: the checkpoint is renamed into place only after it did, so the
    complete folder holds rank 1's files, and a resume from it works."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_RANK)
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",
        "PYTHONPATH": f"{hooks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "scripts/train.py"]
    args = _args(
        tmp_path / "run", base_pipeline, shapes_dir, **{"optimization.max_steps": 2, "checkpointing.steps": 1}
    )
    res = run_command([*launch, *args], timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    for step in (1, 2):
        folder = tmp_path / "run" / "checkpoints" / f"checkpoint-{step:08d}"
        assert {"rank1_was_here", "random_states_1.pkl", "trainer_state.json"} <= set(os.listdir(folder))
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))
    args = _args(
        tmp_path / "run",
        base_pipeline,
        shapes_dir,
        **{"optimization.max_steps": 3, "checkpointing.resume_from": "latest"},
    )
    res = run_command([*launch, *args], timeout=600, env=env)
    assert res.returncode == 0 and "resumed from" in res.stderr, res.stderr[-3000:]


KILL_RANK1 = """
import os, signal
import accelerate

_save = accelerate.Accelerator.save_state


def save_state(self, output_dir=None, **kw):  # rank 1 dies hard while checkpoint 4 is being written
    out = _save(self, output_dir, **kw)
    if os.environ.get("RANK") == "1" and str(output_dir).endswith("checkpoint-00000004.tmp"):
        os.kill(os.getpid(), signal.SIGKILL)
    return out


accelerate.Accelerator.save_state = save_state
"""

KILL_CASES = {  # kind -> (launch config, extra settings): EMA where whole weights allow it
    "ddp": (lambda tmp: None, {"optimization.ema_decay": 0.9}),
    "zero2": (lambda tmp: _deepspeed_config(tmp), {"optimization.ema_decay": 0.9}),
    "zero3": (lambda tmp: _deepspeed_config(tmp, stage=3), {}),
    "fsdp": (lambda tmp: _fsdp_config(tmp), {}),
}


@pytest.mark.parametrize("kind", list(KILL_CASES))
def test_sigkill_mid_checkpoint_then_resume_is_exact(tmp_path, base_pipeline, shapes_dir, kind):
    """A process SIGKILLed while checkpoint 4 is written leaves checkpoint 2 complete and checkpoint 4 unfinished;
    `resume_from=latest` continues from step 2 and ends with the weights of an uninterrupted run, bit for bit.
    So the optimizer state (Adam moments; FSDP's sharded state dict), EMA, sampler position and RNG all
    come back."""
    config, extra = KILL_CASES[kind]
    config = config(tmp_path)
    settings = {"checkpointing.steps": 2, "optimization.max_steps": 6, **extra}
    straight = tmp_path / "straight"
    res = _launch(kind, config, _args(straight, base_pipeline, shapes_dir, **settings))
    assert res.returncode == 0, res.stderr[-3000:]

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(KILL_RANK1)
    env = {**os.environ, "PYTHONPATH": f"{hooks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    killed = tmp_path / "killed"
    res = _launch(kind, config, _args(killed, base_pipeline, shapes_dir, **settings), env=env)
    assert res.returncode != 0
    folders = sorted(os.listdir(killed / "checkpoints"))
    assert folders[0] == "checkpoint-00000002" and all(f.endswith(".tmp") for f in folders[1:]), folders

    res = _launch(
        kind,
        config,
        _args(killed, base_pipeline, shapes_dir, **settings, **{"checkpointing.resume_from": "latest"}),
    )
    assert res.returncode == 0 and "at step 2" in res.stderr, res.stderr[-3000:]
    assert _losses(killed)[-4:] == _losses(straight)[-4:]
    wa, wb = _weights(straight), _weights(killed)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fsdp_matches_ddp_and_gathers_for_validation_and_export(tmp_path, base_pipeline, shapes_dir):
    """FSDP (the shipped config, its plugin applied by hand on CPU) with gradient accumulation 2 on images +
    videos: DDP's losses; validation, each checkpoint's transformer/ and the export gather the full state dict."""
    runs = {}
    for kind in ("ddp", "fsdp"):
        out = tmp_path / kind
        extra = {"validation.steps": 3, "validation.num_frames": 5, "validation.inference_steps": 2}
        res = _launch(
            kind,
            _fsdp_config(tmp_path) if kind == "fsdp" else None,
            _args(
                out,
                base_pipeline,
                shapes_dir,
                **{"checkpointing.steps": 2, "optimization.gradient_accumulation_steps": 2},
                **extra,
            ),
        )
        assert res.returncode == 0, res.stderr[-3000:]
        runs[kind] = out
    assert _losses(runs["ddp"]) == pytest.approx(_losses(runs["fsdp"]), rel=1e-5)
    base = load_file(os.path.join(base_pipeline, "transformer", "diffusion_pytorch_model.safetensors"))
    wa, wb = _weights(runs["ddp"]), _weights(runs["fsdp"])
    assert wa.keys() == wb.keys() and _relative_difference(wa, wb, base) < 1e-3
    checkpoint = runs["fsdp"] / "checkpoints" / "checkpoint-00000002"
    assert "pytorch_model_fsdp_0" in os.listdir(checkpoint)  # sharded training state
    served = load_file(checkpoint / "transformer" / "diffusion_pytorch_model.safetensors")
    assert served.keys() == wb.keys() and all(v.shape == wb[k].shape for k, v in served.items())
    assert os.listdir(runs["fsdp"] / "validation" / "step-00000003")


@pytest.mark.parametrize(
    "state_dict_type, setting, message",
    [
        ("SHARDED_STATE_DICT", {"model.train_text_encoder": True}, "not supported under DeepSpeed or FSDP"),
        ("FULL_STATE_DICT", {}, "FULL_STATE_DICT cannot be saved by CPU processes"),
    ],
)
def test_fsdp_refusals_are_clear(tmp_path, base_pipeline, shapes_dir, state_dict_type, setting, message):
    """What an FSDP launch cannot do is refused at start, in one line naming the setting."""
    res = _launch(
        "fsdp",
        _fsdp_config(tmp_path, state_dict_type),
        _args(tmp_path / "r", base_pipeline, shapes_dir, **setting),
    )
    assert res.returncode != 0 and message in res.stderr, res.stderr[-3000:]
