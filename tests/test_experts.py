"""Two denoising experts split by noise level (Wan 2.2's `transformer` / `transformer_2` / `boundary_ratio`):
joined by `scripts/make_experts.py`, saved and loaded like any pipeline folder, each step run by the right one."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from conftest import ROOT, make_pipeline

from easyanimate.models.fp16 import convert_fp16
from easyanimate.pipeline.pipeline_easyanimate import EasyAnimatePipeline

GEN = dict(num_frames=5, height=32, width=32, num_inference_steps=6, guidance_scale=3.0, output_type="np")


def _script():
    spec = importlib.util.spec_from_file_location(
        "make_experts", os.path.join(ROOT, "scripts/make_experts.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _with_other_transformer(src: str, dst: str, scale: float = 0.2) -> str:
    """`src`'s pipeline with its transformer's weights changed (the same VAE and text encoder)."""
    pipe = EasyAnimatePipeline.from_pretrained(src)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in pipe.transformer.parameters():
            p.add_(torch.randn_like(p) * scale)
    pipe.save_pretrained(dst)
    return dst


def _frames(pipe) -> torch.Tensor:
    return torch.from_numpy(pipe("a red circle", generator=torch.Generator().manual_seed(3), **GEN).frames)


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    root = tmp_path_factory.mktemp("experts")
    high = make_pipeline(root / "high", sampler="Flow", prediction_type="flow")
    low = _with_other_transformer(high, str(root / "low"))
    out = str(root / "joined")
    assert _script()(["--high", high, "--low", low, "--boundary", "0.5", "--output", out]) == 0
    return high, low, out


def test_joined_pipeline_loads_and_each_step_runs_the_right_expert(experts):
    high, low, out = experts
    pipe = EasyAnimatePipeline.from_pretrained(out)
    assert pipe.config.boundary_ratio == 0.5 and pipe.transformer_2 is not None
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda m, a: calls.append(("high", float(a[1][0]))))
    pipe.transformer_2.register_forward_pre_hook(lambda m, a: calls.append(("low", float(a[1][0]))))
    joined = _frames(pipe)
    assert len(calls) == GEN["num_inference_steps"]
    assert all((who == "high") == (t >= 500) for who, t in calls), calls
    assert {who for who, _ in calls} == {"high", "low"}
    # the joined sampling differs from either expert alone, which it would not if one did every step
    for single in (high, low):
        assert not torch.allclose(joined, _frames(EasyAnimatePipeline.from_pretrained(single)), atol=1e-3)


def test_same_weights_in_both_experts_is_the_single_model_exactly(experts, tmp_path):
    high, _, _ = experts
    out = str(tmp_path / "same")
    assert _script()(["--high", high, "--low", high, "--boundary", "0.3", "--output", out]) == 0
    assert torch.equal(
        _frames(EasyAnimatePipeline.from_pretrained(out)), _frames(EasyAnimatePipeline.from_pretrained(high))
    )


def test_fp16_copy_keeps_both_experts(experts, tmp_path):
    _, _, out = experts
    dst = str(tmp_path / "fp16")
    convert_fp16(out, dst)
    pipe = EasyAnimatePipeline.from_pretrained(dst, dtype=torch.float32)
    ref = EasyAnimatePipeline.from_pretrained(out)
    w16, w32 = pipe.transformer_2.state_dict(), ref.transformer_2.state_dict()
    assert all(torch.allclose(w16[k], w32[k], atol=1e-2, rtol=1e-2) for k in w32)
    assert pipe.config.boundary_ratio == 0.5


def test_bad_joins_are_refused_with_a_clear_error(experts, tmp_path, capsys):
    high, low, _ = experts
    other_vae = make_pipeline(tmp_path / "other", sampler="Flow", prediction_type="flow", seed=5)
    assert _script()(["--high", high, "--low", other_vae, "--output", str(tmp_path / "x")]) == 2
    assert "different vae weights" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")
    assert (
        _script()(["--high", high, "--low", low, "--boundary", "1.5", "--output", str(tmp_path / "y")]) == 2
    )
    assert "boundary_ratio in (0, 1)" in capsys.readouterr().err
    pipe = EasyAnimatePipeline.from_pretrained(high)
    with pytest.raises(ValueError, match="no transformer_2"):
        EasyAnimatePipeline(**pipe.components, boundary_ratio=0.5)


def _lora_file(folder: str, path: str) -> str:
    from peft import LoraConfig

    p = EasyAnimatePipeline.from_pretrained(folder)
    torch.manual_seed(2)
    p.transformer.add_adapter(
        LoraConfig(
            r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
        )
    )
    p.transformer.save_lora_adapter(path, weight_name="style.safetensors")
    return os.path.join(path, "style.safetensors")


def test_a_lora_goes_into_both_experts_and_unloads_exactly(experts, tmp_path):
    from easyanimate.pipeline.adapters import load_lora, unload_loras

    high, _, out = experts
    lora = _lora_file(high, str(tmp_path))
    pipe = EasyAnimatePipeline.from_pretrained(out)
    base = _frames(pipe)
    load_lora(pipe, lora, weight=0.7)
    for t in (pipe.transformer, pipe.transformer_2):  # the style acts at every noise level
        assert list(t.peft_config) == ["style"]
    assert not torch.allclose(_frames(pipe), base, atol=1e-3)
    unload_loras(pipe)
    assert torch.equal(_frames(pipe), base)
    # diffusers' Wan 2.2 flag: into the low-noise expert alone
    pipe.load_lora_weights(lora, adapter_name="low_only", load_into_transformer_2=True)
    assert not getattr(pipe.transformer, "peft_config", None)
    assert list(pipe.transformer_2.peft_config) == ["low_only"]
    single = EasyAnimatePipeline.from_pretrained(high)
    with pytest.raises(ValueError, match="no transformer_2"):
        single.load_lora_weights(lora, load_into_transformer_2=True)
