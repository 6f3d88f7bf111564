"""Tiny fixtures built offline once per session and saved the way users' weights are laid out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from diffusers import PixArtTransformer2DModel

from easyanimate.data.synthetic import all_captions
from easyanimate.models import build_transformer, build_vae
from easyanimate.models.text_encoder import build_caption_tokenizer, build_tiny_t5_encoder
from easyanimate.pipeline import EasyAnimatePipeline, get_scheduler

CAPTIONS = all_captions()

TINY_PIXART = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=4,
    out_channels=8,
    num_layers=4,
    cross_attention_dim=32,
    sample_size=8,
    caption_channels=24,
    norm_num_groups=1,
)


def make_pixart(seed: int = 0, **overrides) -> PixArtTransformer2DModel:
    """A random tiny PixArt; weights perturbed so zero-initialised parts of it are not trivially zero."""
    torch.manual_seed(seed)
    model = PixArtTransformer2DModel(**{**TINY_PIXART, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="session")
def pixart_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("pixart"))
    make_pixart().save_pretrained(path)
    return path


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script_env(**variables: str) -> dict[str, str]:
    """The environment a `scripts/*.sh` run gets in the tests: this interpreter's folder first on PATH (the scripts
    call `python` / `accelerate`), plus `variables` (MODEL_NAME, OUTPUT_DIR, ...)."""
    return {
        **os.environ,
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
        **variables,
    }


def run_command(
    args: list[str], timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command from the repository root, capturing its output as text."""
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def run_python(
    *args: str, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a repository script or module (`run_python("scripts/x.py", ...)`, `run_python("-m", ...)`) with
    this interpreter from the repository root."""
    return run_command([sys.executable, *args], timeout=timeout, env=env)


@pytest.fixture(scope="session")
def text_encoder_dir(tmp_path_factory) -> str:
    """PixArt layout: text_encoder/ (tiny T5) + tokenizer/ (word-level, from the captions)."""
    path = str(tmp_path_factory.mktemp("t5"))
    tokenizer = build_caption_tokenizer(CAPTIONS, vocab_size=128)
    tokenizer.save_pretrained(os.path.join(path, "tokenizer"))
    build_tiny_t5_encoder(tokenizer, d_model=32).save_pretrained(os.path.join(path, "text_encoder"))
    return path


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> str:
    """A small synthetic shapes dataset (real mp4 + png files, normal-format metadata)."""
    from easyanimate.data.synthetic import generate

    path = str(tmp_path_factory.mktemp("shapes"))
    generate(path, num_videos=8, num_images=4, size=32, frames=9, seed=0)
    return path


def make_pipeline(path, inpaint=False, sampler="Euler", prediction_type="epsilon", seed=0) -> str:
    torch.manual_seed(seed)
    tok = build_caption_tokenizer(CAPTIONS, 128)
    vae = build_vae("tiny")
    transformer = build_transformer(
        "tiny",
        sample_size=4,
        caption_channels=32,
        in_channels=9 if inpaint else 4,
        motion_module_mode="vanilla",
    )
    with torch.no_grad():  # non-zero motion modules so frames interact
        for p in transformer.motion_modules.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    pipe = EasyAnimatePipeline(
        vae=vae,
        text_encoder=build_tiny_t5_encoder(tok),
        tokenizer=tok,
        transformer=transformer,
        scheduler=get_scheduler(sampler, prediction_type),
    )
    pipe.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def t2v_dir(tmp_path_factory) -> str:
    """A tiny text-to-video pipeline folder (read-only for the tests that share it)."""
    return make_pipeline(tmp_path_factory.mktemp("t2v"))


@pytest.fixture(scope="session")
def inp_dir(tmp_path_factory) -> str:
    """A tiny inpaint (image-to-video) pipeline folder (read-only for the tests that share it)."""
    return make_pipeline(tmp_path_factory.mktemp("inp"), inpaint=True)


def tiny_run(output_dir, pipeline: str, shapes_dir: str) -> dict:
    """The settings every tiny DiT training run in the tests shares (32 px, 9 frames, batches of 2)."""
    return {
        "output_dir": str(output_dir),
        "model.pipeline": pipeline,
        "data.meta": os.path.join(shapes_dir, "metadata.json"),
        "data.base_size": 32,
        "data.num_frames": 9,
        "data.batch_size": 2,
        "data.caption_dropout": 0.0,
        "optimization.learning_rate": 2e-3,
        "checkpointing.steps": 100,
    }


def make_tiny_clip_vision(path) -> str:
    """A random tiny CLIP vision model + image processor saved as a local folder (aesthetic / FVD encoders)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    CLIPVisionModel(config).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path
    )
    return str(path)


def make_tiny_clip(path) -> str:
    """A random tiny CLIP (text + vision) with a hand-written vocabulary, saved as a local folder."""
    import json

    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    os.makedirs(path, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    with open(os.path.join(path, "vocab.json"), "w") as fh:
        json.dump(vocab, fh)
    with open(os.path.join(path, "merges.txt"), "w") as fh:
        fh.write("#version: 0.2\n")
    tokenizer = CLIPTokenizer(os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt"))
    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab), max_position_embeddings=64, bos_token_id=0, eos_token_id=1, **small
        ),
        vision_config=dict(image_size=32, patch_size=8, **small),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(path)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(path)
    return str(path)
