"""EasyAnimate v1's quick start as a user runs it: a diffusers PixArt-alpha folder as `--model`, upstream's bare
motion-module file with its layout named, the 2D VAE applied per frame."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import CAPTIONS, run_python
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
)
from safetensors.torch import save_file
from test_upstream_transformer import to_upstream_key

from easyanimate.data.video_io import read_frames
from easyanimate.models.frame_vae import FrameVAE
from easyanimate.models.motion_adapter import UPSTREAM_LAYOUTS
from easyanimate.models.text_encoder import build_caption_tokenizer, build_tiny_t5_encoder
from easyanimate.models.transformer3d import VideoTransformer3DModel
from easyanimate.pipeline.loading import load_pipeline


def pixart_folder(path) -> str:
    torch.manual_seed(0)
    tokenizer = build_caption_tokenizer(CAPTIONS, 128)
    pipe = PixArtAlphaPipeline(
        tokenizer=tokenizer,
        text_encoder=build_tiny_t5_encoder(tokenizer),
        vae=AutoencoderKL(
            block_out_channels=[16, 32], down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=8, sample_size=16,
        ),
        transformer=PixArtTransformer2DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=2,
            cross_attention_dim=32, sample_size=8, caption_channels=32, norm_num_groups=1,
        ),
        scheduler=DPMSolverMultistepScheduler(),
    )  # fmt: skip
    pipe.save_pretrained(path)
    return str(path)


def mm_file(pixart: str, path) -> str:
    """A v1 motion-module file as upstream saved it: every block's attn_temporal keys, non-zero."""
    model = VideoTransformer3DModel.from_pixart(pixart)
    model.set_motion_layout(**UPSTREAM_LAYOUTS["easyanimate-v1"])
    torch.manual_seed(1)
    state = {
        to_upstream_key(k): torch.randn_like(v) * 0.1
        for k, v in model.state_dict().items()
        if k.startswith("motion_modules.")
    }
    save_file(state, str(path))
    return str(path)


def test_v1_quick_start_runs_and_decodes_frame_by_frame(tmp_path):
    pixart = pixart_folder(tmp_path / "PixArt-XL-2-512x512")
    mm = mm_file(pixart, tmp_path / "easyanimate_v1_mm.safetensors")
    pipe = load_pipeline(pixart, motion_module=mm, motion_layout="easyanimate-v1", device="cpu")
    assert isinstance(pipe.vae, FrameVAE) and pipe.vae.latent_frames(16) == 16
    assert pipe.transformer.config.motion_module_mode == "easyanimate"
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(0)
    latents = pipe("a red circle moving left", num_frames=4, height=32, width=32, num_inference_steps=2,
                   generator=gen, output_type="latent").frames  # fmt: skip
    assert latents.shape == (1, 4, 4, 16, 16)  # this tiny 2D VAE compresses 2x
    # each frame decodes as the 2D VAE decodes it alone
    vae2d = AutoencoderKL.from_pretrained(os.path.join(pixart, "vae"))
    with torch.no_grad():
        video = pipe.vae.decode_latents(latents)
        frame2 = vae2d.decode(latents[:, :, 2] / vae2d.config.scaling_factor).sample
    assert torch.allclose(video[:, :, 2], frame2, atol=1e-5)
    # the motion modules act: frames differ from the same model with them silenced
    with torch.no_grad():
        for m in pipe.transformer.motion_modules._modules.values():
            m.proj_out.weight.zero_()
    silenced = pipe("a red circle moving left", num_frames=4, height=32, width=32, num_inference_steps=2,
                    generator=torch.Generator().manual_seed(0), output_type="latent").frames  # fmt: skip
    assert not torch.allclose(silenced, latents, atol=1e-4)

    out = tmp_path / "out"
    res = run_python(
        "predict_t2v.py", "--model", pixart, "--motion-module", mm, "--motion-layout", "easyanimate-v1",
        "--prompt", "a red circle moving left", "--num-frames", "5", "--height", "32", "--width", "32",
        "--steps", "2", "--output-dir", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    videos = sorted(p for p in os.listdir(out) if p.endswith(".mp4"))
    assert read_frames(str(out / videos[0])).shape == (5, 32, 32, 3)
    settings = json.loads((out / videos[0].replace(".mp4", ".json")).read_text())
    assert settings["motion_layout"] == "easyanimate-v1" and np.isfinite(settings["seconds"])
    res = run_python("predict_t2v.py", "--model", pixart, "--motion-module", mm, "--prompt", "x",
                     "--output-dir", str(out))  # fmt: skip
    assert res.returncode != 0 and "does not record its layout" in res.stderr


def test_upstream_v3_vae_folders_are_refused_not_misloaded(tmp_path):
    """Upstream's V2 / V3 VAE (its own MagViT) would load into SliceVAE minus its mid-block attention and
    decode something else: refused by name. A folder that is not there is not looked up on the Hub."""

    from easyanimate.models import SliceVAE

    folder = tmp_path / "vae_v3"
    folder.mkdir()
    config = {"_class_name": "AutoencoderKLMagvit", "ch": 16, "ch_mult": [1, 2, 2, 2],
              "mid_block_use_attention": True, "slice_compression_vae": True}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="upstream EasyAnimate.s V2 / V3 VAE .config has ch, ch_mult"):
        SliceVAE.from_pretrained(str(folder))
    with pytest.raises(FileNotFoundError, match="no VAE config.json in .*no-such-pipeline/vae"):
        SliceVAE.from_pretrained(str(tmp_path / "no-such-pipeline" / "vae"))


# an upstream V3 InP transformer config as upstream writes it, at the test size
TINY_V3_TRANSFORMER = {
    "_class_name": "Transformer3DModel", "_diffusers_version": "0.28.2", "activation_fn": "gelu-approximate",
    "attention_bias": True, "attention_head_dim": 16, "basic_block_type": "global_motionmodule",
    "caption_channels": 32, "cross_attention_dim": 32, "enable_uvit": True, "in_channels": 12,
    "motion_module_type": "Vanilla", "norm_elementwise_affine": False, "norm_eps": 1e-06,
    "norm_type": "ada_norm_single", "num_attention_heads": 2, "num_embeds_ada_norm": 1000, "num_layers": 28,
    "out_channels": 8, "patch_size": 2, "sample_size": 4,
    "motion_module_kwargs_even": {"attention_block_types": ["Temporal_Self", "Temporal_Self"], "block_size": 1,
                                  "num_attention_heads": 2, "num_transformer_block": 1,
                                  "temporal_attention_dim_div": 1, "temporal_position_encoding": True,
                                  "temporal_position_encoding_max_len": 32},
    "motion_module_kwargs_odd": {"attention_block_types": ["Temporal_Self", "Global_Self"], "block_size": 1,
                                 "num_attention_heads": 2, "num_transformer_block": 1,
                                 "temporal_attention_dim_div": 1, "temporal_position_encoding": True,
                                 "temporal_position_encoding_max_len": 32},
}  # fmt: skip


def v3_release_folder(path) -> str:
    """An EasyAnimateV3-XL-2-InP folder as upstream ships it, at the test size: upstream-named transformer and
    VAE weights with upstream's configs, T5, scheduler, and the CLIP vision model in image_encoder/."""
    from diffusers import DDIMScheduler
    from test_upstream_vae import TINY_V3, upstream_vae_folder
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from easyanimate.models.upstream_transformer import upstream_config

    path.mkdir()
    torch.manual_seed(0)
    model = VideoTransformer3DModel(**upstream_config(TINY_V3_TRANSFORMER))
    state = {to_upstream_key(k): torch.randn_like(v) * 0.05 for k, v in model.state_dict().items()}
    (path / "transformer").mkdir()
    save_file(state, str(path / "transformer" / "diffusion_pytorch_model.safetensors"))
    (path / "transformer" / "config.json").write_text(json.dumps(TINY_V3_TRANSFORMER))
    upstream_vae_folder(path / "vae", TINY_V3)
    tokenizer = build_caption_tokenizer(CAPTIONS, 128)
    tokenizer.save_pretrained(path / "tokenizer")
    build_tiny_t5_encoder(tokenizer).save_pretrained(path / "text_encoder")
    DDIMScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", steps_offset=1).save_pretrained(
        path / "scheduler"
    )
    clip = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                            image_size=32, patch_size=8, projection_dim=768)  # fmt: skip
    CLIPVisionModelWithProjection(clip).save_pretrained(path / "image_encoder")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path / "image_encoder"
    )
    index = {"_class_name": "EasyAnimateInpaintPipeline", "_diffusers_version": "0.28.2",
             "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "T5EncoderModel"],
             "tokenizer": ["transformers", "T5Tokenizer"], "transformer": ["easyanimate", "Transformer3DModel"],
             "vae": ["easyanimate", "AutoencoderKLMagvit"]}  # fmt: skip
    (path / "model_index.json").write_text(json.dumps(index))
    return str(path)


def test_v3_inp_release_folder_runs_image_to_video_as_upstream_conditions_it(tmp_path):
    """`--model EasyAnimateV3-XL-2-InP-512x512`: the transformer sees [noisy | VAE latents of the 0/1 mask tiled
    to 3 channels | VAE latents of the video with holes at -1], and CLIP tokens of the start image only in the
    second half of the steps (zeros with a zero mask before, and for the unconditional half)."""
    from easyanimate.data.transforms import resize_crop
    from easyanimate.models.upstream_vae import UpstreamMagvitVAE

    folder = v3_release_folder(tmp_path / "EasyAnimateV3-XL-2-InP-512x512")
    pipe = load_pipeline(folder, device="cpu")
    assert isinstance(pipe.vae, UpstreamMagvitVAE) and pipe.inpaint_kind == "upstream"
    assert pipe.image_encoder is not None and pipe.shape_rule.frames_text.startswith("8k or 1 + 8k")
    pipe.set_progress_bar_config(disable=True)
    seen = []
    pipe.transformer.register_forward_pre_hook(lambda m, a, kw: seen.append((a[0], kw)), with_kwargs=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    out = pipe("a red circle moving left", num_frames=8, height=32, width=32, num_inference_steps=4,
               guidance_scale=3.0, start_image=image, generator=torch.Generator().manual_seed(0)).frames  # fmt: skip
    assert out.shape == (1, 8, 32, 32, 3) and np.isfinite(out).all()
    # the conditioning channels, rebuilt here from the definition
    start = resize_crop(image[None], (32, 32), None)[:, 0]
    video = torch.full((1, 3, 8, 32, 32), -1.0)
    video[0, :, 0] = start
    mask = torch.ones(1, 3, 8, 32, 32)
    mask[:, :, 0] = 0
    with torch.no_grad():
        expected = torch.cat([pipe.vae.encode_latents(mask), pipe.vae.encode_latents(video)], 1)
    for x, _ in seen:
        assert torch.allclose(x[:, 4:], expected.expand(2, -1, -1, -1, -1), atol=1e-5)
    masks = [kw["clip_attention_mask"] for _, kw in seen]
    assert [m.sum().item() for m in masks] == [0, 0, 8, 8]  # 8 tokens, conditional half, steps 3 and 4
    assert masks[2][0].sum() == 0 and bool((seen[2][1]["clip_encoder_hidden_states"][1] != 0).any())
    # text-to-video with the InP model: zeros for both groups and no CLIP tokens, as upstream
    seen.clear()
    pipe("a red circle moving left", num_frames=1, height=32, width=32, num_inference_steps=2,
         guidance_scale=3.0, generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert all(not x[:, 4:].any() and not kw["clip_attention_mask"].any() for x, kw in seen)
    with pytest.raises(ValueError, match="num_frames must be 8k or 1 \\+ 8k, got 12"):
        pipe("a red circle", num_frames=12, height=32, width=32, num_inference_steps=1)
    # long videos advance by whole 8-frame slices, the kept frames given as the next segment's head
    from easyanimate.pipeline.long_video import generate_long_video

    kw = dict(height=32, width=32, num_inference_steps=1, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="num_frames - overlap must be a multiple of 8"):
        generate_long_video(pipe, "a red circle", 24, num_frames=16, overlap=9, **kw)
    assert generate_long_video(pipe, "a red circle", 24, num_frames=16, overlap=8, **kw).shape[2] == 24


def test_v3_release_folder_through_the_cli(tmp_path):
    """`predict_i2v.py --model <V3 InP release> --start-image a.png --smooth-seams`."""
    from PIL import Image

    folder = v3_release_folder(tmp_path / "EasyAnimateV3-XL-2-InP-512x512")
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    res = run_python("predict_i2v.py", "--model", folder, "--prompt", "a red circle moving left",
                     "--start-image", str(image), "--num-frames", "9", "--height", "32", "--width", "32",
                     "--steps", "2", "--smooth-seams", "--device", "cpu", "--output-dir", str(out))  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    videos = sorted(out.glob("*.mp4"))
    assert len(videos) == 1 and read_frames(str(videos[0])).shape == (9, 32, 32, 3)


def test_web_ui_lists_and_runs_upstream_releases(tmp_path):
    """The UI lists a V3 release with its frame rule, and upstream's bare mm file once per layout (the file does
    not record it); choosing `(easyanimate-v1)` runs v1's quick start."""
    from test_ui import settings

    from easyanimate.ui.controller import Controller, UIError

    root = tmp_path / "models"
    pixart = pixart_folder(root / "Diffusion_Transformer" / "PixArt-XL-2-512x512")
    (root / "Motion_Module").mkdir()
    mm_file(pixart, root / "Motion_Module" / "easyanimate_v1_mm.safetensors")
    (root / "Motion_Module" / "notes.safetensors").write_bytes(b"not a safetensors file")
    v3_release_folder(root / "Diffusion_Transformer" / "EasyAnimateV3-XL-2-InP-512x512")
    c = Controller(str(root), output_dir=str(tmp_path / "out"))
    assert c.motion_modules() == ["none"] + [
        f"easyanimate_v1_mm.safetensors (easyanimate-v{v})" for v in (1, 2, 3)
    ]
    v3 = c.defaults("EasyAnimateV3-XL-2-InP-512x512")
    assert v3["rule"].frames_ok(v3["frames"]) and v3["frames"] % 8 in (0, 1)
    with pytest.raises(UIError, match=r"frames must be 8k or 1 \+ 8k"):
        c.generate(settings(base_model="EasyAnimateV3-XL-2-InP-512x512", frames=12))
    out = c.generate(settings(base_model="PixArt-XL-2-512x512", frames=3, sampler="DPM++",
                              motion_module="easyanimate_v1_mm.safetensors (easyanimate-v1)"))  # fmt: skip
    assert read_frames(out["video"]).shape == (3, 32, 32, 3)
    assert c._pipe.transformer.motion_modules["0"].layers[0].grid == 2
