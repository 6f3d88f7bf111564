"""The embedded demo model (models/, trained by scripts/train_demo.sh) and the scripts that build and ship it."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from conftest import ROOT, make_pipeline, run_python
from safetensors.torch import load_file

from easyanimate.data.video_io import read_frames
from easyanimate.models.slice_vae import SliceVAE
from easyanimate.models.text_encoder import load_text_encoder
from easyanimate.pipeline import EasyAnimatePipeline
from easyanimate.pipeline.adapters import load_lora, load_motion_module, unload_loras

MODELS = os.path.join(ROOT, "models")
DEMO = os.path.join(MODELS, "Diffusion_Transformer", "EasyAnimate-demo")
DEMO_INP = os.path.join(MODELS, "Diffusion_Transformer", "EasyAnimate-demo-InP")
LORA = os.path.join(MODELS, "Personalized_Model", "demo-outline-lora.safetensors")
MOTION = os.path.join(MODELS, "Motion_Module", "EasyAnimate-demo-motion")


def _weights(folder: str) -> list[str]:
    return [
        os.path.join(r, n) for r, _, files in os.walk(folder) for n in files if n.endswith(".safetensors")
    ]


def test_demo_weights_are_fp16_and_small():
    files = _weights(DEMO) + _weights(DEMO_INP) + _weights(MOTION) + [LORA]
    assert len(files) >= 6, files
    assert sum(os.path.getsize(f) for f in files) < 40e6
    for f in files:
        assert {t.dtype for t in load_file(f).values()} == {torch.float16}, f


def test_predict_t2v_with_the_demo_model(tmp_path):
    """What `make demo` runs (fewer steps): an mp4 of 64x64 frames and its settings."""
    res = run_python(
        "predict_t2v.py",
        "--prompt",
        "a blue square moving up on a white background",
        "--steps",
        "4",
        "--num-frames",
        "9",
        "--output-dir",
        str(tmp_path),
    )
    assert res.returncode == 0, res.stderr
    frames = read_frames(str(tmp_path / "0000.mp4"))
    assert frames.shape == (9, 64, 64, 3)
    settings = json.loads((tmp_path / "0000.json").read_text())
    assert settings["prompt"].startswith("a blue square") and settings["steps"] == 4


def test_demo_inp_lora_and_motion_module_load():
    pipe = EasyAnimatePipeline.from_pretrained(DEMO, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)

    def sample():
        return pipe(
            "a red circle on a gray background",
            num_frames=1,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).frames[0]

    base = sample()
    load_lora(pipe, LORA, 1.0)
    assert not np.array_equal(sample(), base)  # the LoRA acts...
    unload_loras(pipe)
    np.testing.assert_array_equal(sample(), base)  # ...and only while loaded
    load_motion_module(pipe, MOTION)  # the motion modules alone load into the backbone
    inp = EasyAnimatePipeline.from_pretrained(DEMO_INP, dtype=torch.float32)
    assert inp.transformer.config.in_channels == 2 * pipe.vae.config.latent_channels + 1


def test_convert_fp16_keeps_outputs(tmp_path):
    src = make_pipeline(tmp_path / "src")
    dst = tmp_path / "half"
    res = run_python("scripts/convert_fp16.py", src, str(dst))
    assert res.returncode == 0, res.stderr
    assert sum(map(os.path.getsize, _weights(str(dst)))) < 0.6 * sum(map(os.path.getsize, _weights(src)))

    def run(folder):
        pipe = EasyAnimatePipeline.from_pretrained(folder, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        return pipe(
            "a red circle",
            num_frames=5,
            num_inference_steps=2,
            height=32,
            width=32,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
        ).frames[0]

    assert np.abs(run(src) - run(str(dst))).max() < 2e-2


def test_make_base_pipeline(tmp_path, shapes_dir):
    from easyanimate.models import build_vae

    torch.manual_seed(0)
    build_vae("tiny").save_pretrained(str(tmp_path / "vae"))
    res = run_python(
        "scripts/make_base_pipeline.py",
        "--vae",
        str(tmp_path / "vae"),
        "--output",
        str(tmp_path / "base"),
        "--captions",
        os.path.join(shapes_dir, "metadata.json"),
        "--scale-from",
        shapes_dir,
        "--d-model",
        "32",
    )
    assert res.returncode == 0, res.stderr
    text = load_text_encoder(str(tmp_path / "base"))
    feats, mask = text(["a red circle moving left on a gray background"])
    assert feats.shape[-1] == 32 and mask.sum() > 3
    assert text.tokenizer.unk_token_id not in text.tokenizer("a purple triangle").input_ids
    vae = SliceVAE.from_pretrained(str(tmp_path / "base" / "vae"))
    frames = read_frames(os.path.join(shapes_dir, "videos", "00000.mp4"))
    x = torch.from_numpy(np.array(frames, dtype=np.float32) / 127.5 - 1).permute(3, 0, 1, 2)[None]
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor
    assert 0.5 < float(z.std()) < 2.0  # scaled latents are near unit variance (unscaled: config default 1.0)


def test_demo_evaluation_runs_on_the_demo_model(tmp_path):
    """`python -m easyanimate.eval demo`'s code path, tiny counts; the shipped model reads colour words."""
    from easyanimate.eval.demo import evaluate_demo

    results = evaluate_demo(
        DEMO, output=str(tmp_path), inpaint_model=DEMO_INP, num_prompts=2, num_i2v=3, num_lora=0, steps=2
    )
    assert results["t2v"]["n"] == 2 and len(os.listdir(tmp_path / "t2v")) == 4  # mp4 + json sidecars
    assert results["vae"]["psnr"] > 20 and results["i2v"]["first_frame_psnr"] > 20
    reads = results["t2v"]["caption_sensitivity"]
    assert reads["color"]["relative_increase"] > 0.05, reads  # measured on 30 clips: +0.77
    assert json.load(open(tmp_path / "results.json"))["t2v"]["caption_sensitivity"]["color"]["n"] == 3


def test_demo_evaluation_without_reference_clips(tmp_path):
    """`--num-i2v 0` (text-to-video only): no VAE, sensitivity or i2v numbers, and no crash (it indexed an
    empty list of clips)."""
    from easyanimate.eval.demo import evaluate_demo

    results = evaluate_demo(
        DEMO, output=str(tmp_path), inpaint_model=DEMO_INP, num_prompts=1, num_i2v=0, num_lora=0, steps=1,
        num_long=1, num_frames=9,
    )  # fmt: skip
    assert results["t2v"]["n"] == 1 and "vae" not in results and "i2v" not in results
    # --num-long: twice the length, scored like text-to-video
    assert results["long"]["n"] == 1 and results["long"]["num_frames"] == 17
    assert read_frames(str(tmp_path / "long" / "0000.mp4")).shape[0] == 17


def test_demo_pyramid_model_loads_and_generates_chunk_by_chunk():
    """The shipped Pyramid Flow demo: fp16, two experts, its 2-stage Pyramid sampler (17 + 8 steps by default),
    chunks of 9 latent frames after a compressed history, and a short run twice the training length."""
    from easyanimate.diffusion.pyramid_sampler import PyramidFlowScheduler
    from easyanimate.pipeline.loading import load_pipeline

    folder = os.path.join(MODELS, "Diffusion_Transformer", "EasyAnimate-demo-pyramid")
    for f in _weights(folder):
        assert {t.dtype for t in load_file(f).values()} == {torch.float16}, f
    pipe = load_pipeline(folder, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, PyramidFlowScheduler) and pipe.scheduler.stages == 2
    assert pipe.scheduler.config.stage_steps == [17, 8] and pipe.transformer_2 is not None
    assert pipe.temporal_pyramid.history == (1, 2, 4, 4) and pipe.temporal_pyramid.chunk == 9
    video = pipe("a red circle moving right on a gray background", num_frames=33, stage_steps=[1, 1],
                 generator=torch.Generator().manual_seed(0)).frames  # fmt: skip
    assert video.shape == (1, 33, 64, 64, 3) and np.isfinite(video).all()
