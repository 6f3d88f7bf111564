"""GPU memory modes end to end, with diffusers' own hooks installed for the CPU as execution device (the same
hooks a GPU run gets): each mode's video equals the plain run's, or is within its storage dtype's error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import cpu_offload

from easyanimate.data.video_io import write_video
from easyanimate.models import build_vae
from easyanimate.models.devices import execution_device
from easyanimate.models.text_encoder import TextEncoder
from easyanimate.pipeline import EasyAnimatePipeline
from easyanimate.pipeline.loading import load_pipeline
from easyanimate.pipeline.memory import MEMORY_MODES, apply_memory_mode, estimate_peak_memory

PROMPT = "a red circle moving left on a gray background"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    frames = (np.random.default_rng(0).random((9, 32, 32, 3)) * 255).astype(np.uint8)
    return write_video(str(tmp_path_factory.mktemp("clip") / "in.mp4"), frames)


def _generate(folder: str, mode: str, storage: str | None = None, **kw) -> torch.Tensor:
    pipe = load_pipeline(folder, memory_mode=mode, device="cpu", storage_dtype=storage)
    pipe.set_progress_bar_config(disable=True)
    args = dict(num_frames=9, height=32, width=32, num_inference_steps=2, output_type="pt")
    return pipe(PROMPT, generator=torch.Generator().manual_seed(0), **{**args, **kw}).frames


def _has_hook(model, name: str) -> bool:
    registries = [getattr(m, "_diffusers_hook", None) for m in model.modules()]
    return any(r is not None and r.get_hook(name) is not None for r in registries)


def _hooked(pipe, mode: str) -> bool:
    """Whether the mode's diffusers / accelerate hooks are on the transformer."""
    model = pipe.transformer
    checks = {
        "none": not _has_hook(model, "layerwise_casting") and not hasattr(model, "_hf_hook"),
        "model_cpu_offload": hasattr(model, "_hf_hook"),
        "model_cpu_offload_and_qfloat8": hasattr(model, "_hf_hook") and _has_hook(model, "layerwise_casting"),
        "qfloat8": _has_hook(model, "layerwise_casting"),
        "group_offload": _has_hook(model, "group_offloading"),
        "sequential_cpu_offload": _has_hook(model, "group_offloading"),
    }
    return checks[mode]


@pytest.mark.parametrize("mode", MEMORY_MODES)
def test_every_memory_mode_computes_the_plain_run(t2v_dir, inp_dir, clip, mode):
    """Text-to-video, image-to-video (the VAE encodes the start image: the InP path) and video-to-video (the VAE
    encodes the clip) in each mode: equal to the plain run; with fp8 storage within e4m3's rounding."""
    start = np.full((32, 32, 3), 200, np.uint8)
    cases = [(t2v_dir, {}), (inp_dir, {"start_image": start}), (t2v_dir, {"video": clip, "strength": 0.5})]
    pipe = load_pipeline(t2v_dir, memory_mode=mode, device="cpu")
    assert _hooked(pipe, mode)
    for folder, kw in cases:
        plain, out = _generate(folder, "none", **kw), _generate(folder, mode, **kw)
        rel = ((out - plain).norm() / plain.norm()).item()
        if "qfloat8" in mode:
            assert 0 < rel < 0.1, (kw.keys(), rel)
        else:
            assert rel < 1e-6, (kw.keys(), rel)


def test_bf16_storage_is_closer_than_fp8(t2v_dir):
    plain = _generate(t2v_dir, "none")
    errors = {
        s: ((_generate(t2v_dir, "model_cpu_offload", s) - plain).norm() / plain.norm()).item()
        for s in ("bfloat16", "float8_e4m3fn")
    }
    assert 0 < errors["bfloat16"] < errors["float8_e4m3fn"] < 0.1, errors


def test_fp8_storage_quarters_the_transformer(t2v_dir):
    pipe = EasyAnimatePipeline.from_pretrained(t2v_dir)
    size = lambda: sum(p.numel() * p.element_size() for p in pipe.transformer.parameters())  # noqa: E731
    before = size()
    apply_memory_mode(pipe, "qfloat8", "cpu")
    assert pipe.transformer.dtype == torch.float32  # computes in fp32, stores in fp8
    assert size() < 0.5 * before
    with pytest.raises(ValueError, match="unknown storage dtype"):
        apply_memory_mode(EasyAnimatePipeline.from_pretrained(t2v_dir), "none", "cpu", storage_dtype="int3")
    with pytest.raises(ValueError, match="unknown GPU memory mode"):
        apply_memory_mode(pipe, "tiny_gpu", "cpu")


def test_inputs_go_where_offloaded_models_compute():
    """accelerate's sequential hooks keep the weights on `meta` until a layer runs: the VAE's latents and the
    text encoder's token ids go to the execution device, not to where the weights are (meta)."""
    torch.manual_seed(0)
    vae = build_vae("tiny").eval()
    latents = torch.randn(1, vae.config.latent_channels, 2, 4, 4)
    with torch.no_grad():
        plain = vae.decode_latents(latents)
        cpu_offload(vae, execution_device=torch.device("cpu"))
        assert next(vae.parameters()).device.type == "meta" and execution_device(vae).type == "cpu"
        assert torch.allclose(vae.decode_latents(latents), plain, atol=1e-6)
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    encoder = T5EncoderModel(T5Config(vocab_size=384, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8))
    cpu_offload(encoder, execution_device=torch.device("cpu"))
    ids, mask = TextEncoder(encoder, ByT5Tokenizer(), max_length=8).tokenize(["a red circle"])
    assert ids.device.type == "cpu" and mask.device.type == "cpu"


def test_estimator_modes_and_the_vaes_slice():
    est = {m: estimate_peak_memory(0.8e9, 512, 512, 145, m).peak_gb for m in MEMORY_MODES}
    assert est["sequential_cpu_offload"] <= est["group_offload"] <= est["model_cpu_offload"]
    assert est["model_cpu_offload"] < est["none"] and est["qfloat8"] < est["none"]
    fp8 = estimate_peak_memory(0.8e9, 512, 512, 145, "model_cpu_offload_and_qfloat8").transformer_gb
    assert fp8 < estimate_peak_memory(0.8e9, 512, 512, 145, "model_cpu_offload").transformer_gb
    # the decode term assumes the slice the VAE really decodes with
    default = estimate_peak_memory(0.8e9, 512, 512, 145).vae_decode_gb
    explicit = estimate_peak_memory(
        0.8e9, 512, 512, 145, decode_slice_latents=build_vae("tiny").decode_slice_latents
    )
    assert default == explicit.vae_decode_gb
