"""EasyAnimatePipeline on tiny random models saved and re-loaded the way users load real ones."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import make_pipeline, run_python
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from PIL import Image

from easyanimate.data.video_io import read_frames, write_video
from easyanimate.models import build_transformer, build_vae
from easyanimate.pipeline import SAMPLERS, EasyAnimatePipeline, get_scheduler
from easyanimate.pipeline.adapters import load_lora, load_motion_module, unload_loras
from easyanimate.pipeline.conditioning import inpaint_latents, latent_mask
from easyanimate.pipeline.long_video import crossfade, generate_long_video, segment_count

PROMPT = "a red circle moving left on a gray background"


@pytest.fixture()
def pipe(t2v_dir) -> EasyAnimatePipeline:
    p = EasyAnimatePipeline.from_pretrained(t2v_dir)
    p.set_progress_bar_config(disable=True)
    return p


def gen(pipe, seed=0, **kw):
    args = dict(
        num_frames=9,
        height=32,
        width=32,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(seed),
    )
    return pipe(kw.pop("prompt", PROMPT), **{**args, **kw}).frames


def count_batches(pipe):
    """Record the batch size of every transformer call."""
    sizes = []
    pipe.transformer.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
    return sizes


def test_load_and_generate_video_image_and_output_types(pipe, t2v_dir):
    assert sorted(os.listdir(t2v_dir)) == [
        "easyanimate_pipeline.py",  # the entry diffusers' DiffusionPipeline loads our class through
        "model_index.json",
        "scheduler",
        "text_encoder",
        "tokenizer",
        "transformer",
        "vae",
    ]
    video = gen(pipe)
    assert video.shape == (1, 9, 32, 32, 3) and video.min() >= 0 and video.max() <= 1
    assert gen(pipe, num_frames=1).shape == (1, 1, 32, 32, 3)  # text-to-image
    assert gen(pipe, output_type="pt").shape == (1, 3, 9, 32, 32)
    assert gen(pipe, output_type="latent").shape == (1, 4, 3, 4, 4)
    pil = gen(pipe, output_type="pil")
    assert len(pil[0]) == 9 and pil[0][0].size == (32, 32)
    assert gen(pipe, prompt=[PROMPT, "a blue square"]).shape[0] == 2


def test_same_seed_same_frames(pipe):
    a, b, c = gen(pipe, seed=1), gen(pipe, seed=1), gen(pipe, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_guidance_batches_and_changes_output(pipe):
    sizes = count_batches(pipe)
    gen(pipe, guidance_scale=1.0)
    assert set(sizes) == {1}  # no CFG: one pass per step
    sizes.clear()
    gen(pipe, guidance_scale=5.0)
    assert set(sizes) == {2}  # negative + positive in one batch
    assert not np.array_equal(gen(pipe, guidance_scale=1.0), gen(pipe, guidance_scale=5.0))


EXPECTED = {
    "Euler": EulerDiscreteScheduler,
    "Euler A": EulerAncestralDiscreteScheduler,
    "DPM++": DPMSolverMultistepScheduler,
    "PNDM": PNDMScheduler,
    "DDIM": DDIMScheduler,
    "UniPC": UniPCMultistepScheduler,
    "Flow": FlowMatchEulerDiscreteScheduler,
}


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n not in ("Flow", "Pyramid")])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_every_diffusion_sampler_runs(pipe, name, prediction_type):
    pipe.scheduler = get_scheduler("Euler", prediction_type)
    pipe.set_sampler(name)
    assert type(pipe.scheduler) is EXPECTED[name]
    assert pipe.scheduler.config.prediction_type == prediction_type
    video = gen(pipe, num_inference_steps=3)
    assert np.isfinite(video).all()


def test_flow_sampler_and_mismatches(tmp_path):
    p = EasyAnimatePipeline.from_pretrained(
        make_pipeline(tmp_path / "flow", sampler="Flow", prediction_type="flow")
    )
    p.set_progress_bar_config(disable=True)
    assert type(p.scheduler) is FlowMatchEulerDiscreteScheduler
    assert np.isfinite(gen(p)).all()
    with pytest.raises(ValueError, match="does not fit a 'flow' model"):
        p.set_sampler("DDIM")
    with pytest.raises(ValueError, match="unknown sampler 'Heun'.*Euler A"):
        get_scheduler("Heun")
    with pytest.raises(ValueError, match="does not fit a 'epsilon' model"):
        get_scheduler("Flow", "epsilon")


def test_bad_inputs_give_clear_errors(pipe):
    with pytest.raises(ValueError, match="multiples of 16"):
        gen(pipe, height=40)
    with pytest.raises(ValueError, match=r"1 \+ 4k, got 8 \(nearest: 5 or 9\)"):
        gen(pipe, num_frames=8)
    with pytest.raises(ValueError, match="num_inference_steps must be >= 1"):
        gen(pipe, num_inference_steps=0)
    with pytest.raises(ValueError, match="InP"):
        gen(pipe, start_image=np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="video not found"):
        gen(pipe, video="/nonexistent.mp4", strength=0.5)
    with pytest.raises(ValueError, match="needs an input video"):
        gen(pipe, strength=0.5)


def test_image_to_video_conditioning(tmp_path, inp_dir):
    pipe = EasyAnimatePipeline.from_pretrained(inp_dir)
    pipe.set_progress_bar_config(disable=True)
    start = np.zeros((32, 32, 3), np.uint8)
    start[..., 0] = 255  # red
    end = np.zeros((32, 32, 3), np.uint8)
    end[..., 2] = 255  # blue
    expected_mask = {
        "start": [0.0, 1.0, 1.0],
        "end": [1.0, 1.0, 0.75],  # the last latent covers 4 frames, the last of which is kept
        "both": [0.0, 1.0, 0.75],
    }
    seen = []  # what the transformer receives beside the noisy latents: [latent mask, masked-video latents]
    hook = pipe.transformer.register_forward_pre_hook(
        lambda _module, args: seen.append(args[0][:1, pipe.latent_channels :].clone())
    )
    for case, mask_values in expected_mask.items():
        kwargs = {
            "start_image": start if case != "end" else None,
            "end_image": end if case != "start" else None,
        }
        seen.clear()
        video = gen(pipe, **kwargs)
        assert video.shape == (1, 9, 32, 32, 3)
        cond = seen[0]  # (1, 1 + C, latent frames, h, w)
        assert all(torch.equal(c, cond) for c in seen)  # the same condition at every step
        assert cond.shape == (1, 5, 3, 4, 4)
        assert [round(v, 4) for v in cond[0, 0].mean(dim=(1, 2)).tolist()] == mask_values, case
        # the masked-video latents are the VAE latents of a video holding only the kept frames
        ref_video = torch.zeros(1, 3, 9, 32, 32)
        if kwargs["start_image"] is not None:
            ref_video[0, 0, 0], ref_video[0, 1:, 0] = 1.0, -1.0
        if kwargs["end_image"] is not None:
            ref_video[0, 2, -1], ref_video[0, :2, -1] = 1.0, -1.0
        ref = pipe.vae.encode(ref_video).latent_dist.mode() * pipe.vae.config.scaling_factor
        assert torch.allclose(cond[:, 1:], ref, atol=1e-5), case
    hook.remove()
    # resize to the start image: 48x32 image -> 48 wide, 32 high
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "s.png")
    out = gen(pipe, start_image=str(tmp_path / "s.png"), height=None, width=None, resize_to_start_image=True)
    assert out.shape == (1, 9, 32, 48, 3)
    with pytest.raises(FileNotFoundError, match="image not found"):
        gen(pipe, start_image=str(tmp_path / "missing.png"))


def test_start_latent_is_kept_unless_regeneration_is_asked(inp_dir):
    pipe = EasyAnimatePipeline.from_pretrained(inp_dir)
    pipe.set_progress_bar_config(disable=True)
    start = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    image = torch.from_numpy(start.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None, :, None]
    with torch.no_grad():  # the VAE's own reconstruction of the start image (the causal VAE: frame 0 alone)
        recon = pipe.vae.decode(pipe.vae.encode(image).latent_dist.mode()).sample[0, :, 0]
    recon = ((recon.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    kept = gen(pipe, start_image=start, output_type="np")[0, 0]
    redrawn = gen(pipe, start_image=start, output_type="np", keep_start_latent=False)[0, 0]
    assert np.abs(kept - recon).max() < 1e-4
    assert np.abs(redrawn - recon).max() > 1e-2


def test_latent_mask_pools_the_causal_groups():
    mask = torch.ones(1, 1, 9, 16, 16)
    mask[:, :, 0] = 0
    mask[:, :, 5:7] = 0
    assert latent_mask(mask)[0, 0, :, 0, 0].tolist() == [0.0, 1.0, 0.5]


@pytest.mark.parametrize("preset", ["tiny", "demo"])
def test_inpaint_mask_matches_the_vae_latents(preset):
    # the demo VAE compresses 4x / 2x, the others 8x / 4x: the mask must follow the VAE it goes with
    vae = build_vae(preset).eval()
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    mask = torch.zeros(1, 1, 9, 32, 32)
    mask[:, :, 1:] = 1  # keep the first frame
    mask_latent, latents = inpaint_latents(vae, video, mask)
    assert mask_latent.shape[2:] == latents.shape[2:]
    assert mask_latent[0, 0, 0].max() == 0 and mask_latent[0, 0, 1:].min() == 1


def test_video_to_video(tmp_path, pipe):
    frames = (np.random.default_rng(0).random((9, 32, 32, 3)) * 255).astype(np.uint8)
    path = write_video(str(tmp_path / "in.mp4"), frames)
    sizes = count_batches(pipe)
    out = gen(pipe, video=path, strength=0.5, num_inference_steps=4, guidance_scale=1.0)
    assert out.shape == (1, 9, 32, 32, 3) and len(sizes) == 2  # half of 4 steps
    (tmp_path / "bad.mp4").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match="cannot read video"):
        gen(pipe, video=str(tmp_path / "bad.mp4"), strength=0.5)


def test_long_video_segments(pipe, inp_dir):
    assert segment_count(9, 9, 5) == 1 and segment_count(21, 9, 5) == 4 and segment_count(22, 9, 5) == 5
    a, b = torch.zeros(1, 3, 5, 2, 2), torch.ones(1, 3, 5, 2, 2)
    assert torch.allclose(crossfade(a, b)[0, 0, :, 0, 0], torch.tensor([1, 2, 3, 4, 5]) / 6)
    for p in (pipe, EasyAnimatePipeline.from_pretrained(inp_dir)):
        p.set_progress_bar_config(disable=True)
        calls = []
        original = p.__class__.__call__

        def spy(self, *args, _orig=original, _calls=calls, **kw):
            _calls.append({k for k in ("head_frames", "known_latents") if k in kw})
            return _orig(self, *args, **kw)

        p.__class__.__call__ = spy
        try:
            video = generate_long_video(
                p,
                PROMPT,
                total_frames=21,
                num_frames=9,
                overlap=5,
                height=32,
                width=32,
                num_inference_steps=2,
                generator=torch.Generator().manual_seed(0),
            )
        finally:
            p.__class__.__call__ = original
        assert video.shape == (1, 3, 21, 32, 32)
        expect = {"head_frames"} if p.is_inpaint_model else {"known_latents"}
        assert calls == [set()] + [expect] * 3
    # continuity: segment 2 starts from segment 1's tail. Its first 5 frames are the VAE's decoding of that
    # tail's latents (re-imposed), cross-faded with the tail itself; segment 1 comes first unchanged.
    kwargs = dict(height=32, width=32, num_inference_steps=2)
    long = generate_long_video(
        pipe, PROMPT, 13, num_frames=9, overlap=5, generator=torch.Generator().manual_seed(0), **kwargs
    )
    first = pipe(
        PROMPT, num_frames=9, generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs
    ).frames
    tail = first[:, :, -5:]
    with torch.no_grad():
        head = ((pipe.vae.decode_latents(pipe.vae.encode_latents(tail * 2 - 1)).float() + 1) / 2).clamp(0, 1)
    assert long.shape == (1, 3, 13, 32, 32)
    assert torch.equal(long[:, :, :4], first[:, :, :4])
    assert torch.allclose(long[:, :, 4:9], crossfade(tail, head), atol=1e-5)
    with pytest.raises(ValueError, match="overlap"):
        generate_long_video(pipe, PROMPT, 21, num_frames=9, overlap=4)


def _make_lora_file(t2v_dir, path) -> str:
    from peft import LoraConfig

    p = EasyAnimatePipeline.from_pretrained(t2v_dir)
    torch.manual_seed(0)
    config = LoraConfig(
        r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    p.transformer.add_adapter(config)
    p.transformer.save_lora_adapter(str(path), weight_name="style.safetensors")
    return str(path / "style.safetensors")


def test_lora_load_changes_and_unload_restores_exactly(tmp_path, pipe, t2v_dir):
    lora = _make_lora_file(t2v_dir, tmp_path)
    base = gen(pipe)
    load_lora(pipe, lora, weight=1.0)
    styled = gen(pipe)
    assert np.abs(styled - base).max() > 1e-3
    unload_loras(pipe)
    assert np.array_equal(gen(pipe), base)
    load_lora(pipe, lora, weight=0.0)
    assert np.allclose(gen(pipe), base, atol=1e-6)
    with pytest.raises(FileNotFoundError):
        load_lora(pipe, str(tmp_path / "none.safetensors"))


def test_motion_module_swap_changes_output(tmp_path, pipe):
    donor = build_transformer("tiny", sample_size=4, caption_channels=32)
    with torch.no_grad():
        for p in donor.motion_modules.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    donor.save_motion_modules(str(tmp_path / "mm"))
    base = gen(pipe)
    load_motion_module(pipe, str(tmp_path / "mm"))
    seen = []  # every motion module call of the next generation: (its inputs, its output)
    hooks = [
        module.register_forward_hook(lambda m, args, out, i=i: seen.append((i, args, out)))
        for i, module in (
            (i, pipe.transformer.motion_modules[i]) for i in pipe.transformer.motion_modules.keys()
        )
    ]
    swapped = gen(pipe)
    for h in hooks:
        h.remove()
    assert np.abs(swapped - base).max() > 1e-4
    # the pipeline now computes exactly what the donor's own modules compute on the same tokens
    assert {i for i, _, _ in seen} == set(donor.motion_modules.keys())
    with torch.no_grad():
        for i, args, out in seen:
            assert torch.equal(donor.motion_modules[i](*args), out), i


def test_cli_text_to_video_end_to_end(tmp_path, t2v_dir):
    out = tmp_path / "out"
    common = ["--model", t2v_dir, "--height", "32", "--width", "32", "--steps", "2", "--output-dir", str(out)]
    res = run_python(
        "predict_t2v.py", "--prompt", PROMPT, "--num-frames", "9", "--seed", "7", "--gif", *common
    )
    assert res.returncode == 0, res.stderr[-2000:]
    frames = read_frames(str(out / "0000.mp4"))
    assert frames.shape == (9, 32, 32, 3)
    settings = json.load(open(out / "0000.json"))
    assert settings["prompt"] == PROMPT and settings["seed"] == 7 and settings["num_frames"] == 9
    assert os.path.isfile(out / "0000.gif")
    # bad input: one clear line, no stack trace
    res = run_python("predict_t2v.py", "--prompt", PROMPT, "--num-frames", "8", *common)
    assert res.returncode == 2 and "1 + 4k" in res.stderr and "Traceback" not in res.stderr


def test_cli_image_to_video_end_to_end(tmp_path, inp_dir):
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(tmp_path / "start.png")
    out = tmp_path / "out"
    res = run_python(
        "predict_i2v.py",
        "--model",
        inp_dir,
        "--prompt",
        PROMPT,
        "--start-image",
        str(tmp_path / "start.png"),
        "--height",
        "32",
        "--width",
        "32",
        "--steps",
        "2",
        "--num-frames",
        "5",
        "--output-dir",
        str(out),
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert read_frames(str(out / "0000.mp4")).shape == (5, 32, 32, 3)
    res = run_python(
        "predict_i2v.py", "--model", inp_dir, "--prompt", PROMPT, "--start-image", "/missing.png"
    )
    assert res.returncode == 2 and "image not found" in res.stderr
