"""EasyAnimate v1's quick start as a user runs it: a diffusers PixArt-alpha folder as `--model`, upstream's bare
motion-module file with its layout named, the 2D VAE applied per frame."""

from __future__ import annotations

import json
import os

import numpy as np
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
    import pytest

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
