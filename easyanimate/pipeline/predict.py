"""What `predict_t2v.py` and `predict_i2v.py` do: load, configure, generate, save mp4 + sidecar JSON."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import secrets
import sys
import time
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..models.motion_adapter import UPSTREAM_LAYOUTS
from .memory import MEMORY_MODES, STORAGE_DTYPES

DEMO_MODEL = "models/Diffusion_Transformer/EasyAnimate-demo"


def _number_flag(cast: type, ok, rule: str):
    """An argparse type: `cast` the text, then require `ok(value)` (one-line errors naming the value)."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a number' if cast is float else 'an integer'}"
            ) from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text} is not {rule}")
        return value

    return parse


finite_float = _number_flag(float, math.isfinite, "a finite number")  # nan / inf gave black videos
positive_int = _number_flag(int, lambda v: v >= 1, "a positive integer")  # 0 meant the default, or 24 fps
seed_int = _number_flag(int, lambda v: -(2**63) <= v < 2**64, "a seed in [-2^63, 2^64)")  # torch's range
unit_float = _number_flag(float, lambda v: 0 < v <= 1, "in (0, 1]")
fps_int = _number_flag(int, lambda v: 1 <= v <= 240, "a frame rate in 1..240")


def step_list(text: str) -> list[int]:
    """`10,8,7` -> [10, 8, 7] (positive step counts)."""
    try:
        steps = [int(v) for v in text.split(",")]
    except ValueError:
        steps = []
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"expected positive step counts separated by commas, got {text!r}")
    return steps


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """Where and how models sit in memory: the CLIs' and the web UI's shared flags."""
    p.add_argument(
        "--gpu-memory-mode",
        default="none",
        choices=list(MEMORY_MODES),
        help="trade speed for GPU memory: model_cpu_offload (one model on the GPU at a time), "
        "model_cpu_offload_and_qfloat8 (and the transformer stored in fp8), qfloat8 (fp8 storage only), "
        "group_offload (a block at a time), sequential_cpu_offload (a layer at a time: least memory, slowest)",
    )
    p.add_argument(
        "--storage-dtype",
        default=None,
        choices=list(STORAGE_DTYPES),
        help="store the transformer's weights in this dtype, cast per layer as it runs (any memory mode)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="where to generate: cuda, cuda:1, cpu, mps ... (default: cuda when available, else cpu)",
    )


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=DEMO_MODEL,
        help="pipeline folder: ours, a diffusers PixArt-alpha folder (v1, with --motion-module), or an upstream "
        "EasyAnimateV2 / V3 release folder",
    )
    p.add_argument("--prompt", required=True, help="what the video shows")
    p.add_argument("--negative-prompt", default="", help="what to steer away from (classifier-free guidance)")
    p.add_argument(
        "--sampler",
        default=None,
        help="Euler, Euler A, DPM++, PNDM, DDIM, UniPC, Flow or Pyramid (default: the model's)",
    )
    p.add_argument("--steps", type=positive_int, default=25, help="denoising steps")
    p.add_argument(
        "--stage-steps",
        type=step_list,
        default=None,
        help="spatial-pyramid models: steps per stage, coarsest first, e.g. 10,8,7 (default: --steps split evenly)",
    )
    p.add_argument(
        "--guidance-scale", type=finite_float, default=6.0, help="CFG scale; <= 1 disables guidance"
    )
    p.add_argument("--seed", type=seed_int, default=43, help="random seed (same seed, same video)")
    size_help = "pixels, a multiple of the model's VAE ratio x patch size (16 for XL/2, 8 for the demo; default: the model's)"
    p.add_argument("--height", type=positive_int, default=None, help=size_help)
    p.add_argument("--width", type=positive_int, default=None, help=size_help)
    p.add_argument(
        "--num-frames",
        type=int,
        default=17,
        help="what the model's VAE takes: 1 + rk for our VAEs' temporal ratio r (4; the demo VAE's 2), "
        "1 or 9k for upstream V2, 8k or 1 + 8k for upstream V3, any for v1's per-frame VAE; 1 makes an image",
    )
    p.add_argument(
        "--smooth-seams",
        action="store_true",
        help="upstream V2 / V3 VAEs: re-decode the frames around slice borders and average (upstream's pass)",
    )
    p.add_argument("--fps", type=fps_int, default=8, help="frames per second of the saved mp4")
    p.add_argument(
        "--transformer",
        default=None,
        help="a transformer folder in place of the model's (a training checkpoint's checkpoint-N/transformer)",
    )
    p.add_argument("--lora", default=None, help="LoRA safetensors (models/Personalized_Model/...)")
    p.add_argument("--lora-weight", type=finite_float, default=0.55, help="LoRA strength")
    p.add_argument(
        "--motion-module",
        default=None,
        help="motion module folder (models/Motion_Module/...), or upstream's bare file with --motion-layout",
    )
    p.add_argument(
        "--motion-layout",
        default=None,
        choices=sorted(UPSTREAM_LAYOUTS),
        help="the layout of a bare upstream motion-module file (easyanimate-v1 for easyanimate_v1_mm.safetensors)",
    )
    p.add_argument(
        "--transformer-checkpoint",
        default=None,
        help="a bare transformer state dict over the model's weights (e.g. easyanimate_portrait.safetensors)",
    )
    add_device_arguments(p)
    p.add_argument(
        "--skip-memory-check",
        action="store_true",
        help="run even when the estimated peak memory exceeds what is free (the estimate is conservative)",
    )
    p.add_argument("--output-dir", default="samples/easyanimate-videos", help="where mp4 + sidecar JSON go")
    p.add_argument("--gif", action="store_true", help="also write a GIF")


def load_pipeline(args: argparse.Namespace):
    from .loading import load_pipeline as load

    if not os.path.isfile(os.path.join(args.model, "model_index.json")) and os.path.normpath(
        args.model
    ) == os.path.normpath(DEMO_MODEL):
        raise FileNotFoundError(
            f"the demo model is missing: {DEMO_MODEL} has no model_index.json; restore it with "
            "`git checkout models/` or rebuild it with `bash scripts/train_demo.sh`, or pass --model"
        )
    return load(
        args.model,
        sampler=args.sampler,
        motion_module=args.motion_module,
        lora=args.lora,
        lora_weight=args.lora_weight,
        memory_mode=args.gpu_memory_mode,
        device=args.device,
        transformer=args.transformer,
        storage_dtype=args.storage_dtype,
        motion_layout=args.motion_layout,
        transformer_checkpoint=args.transformer_checkpoint,
    )


def next_stem(directory: str, unguessable: bool = False) -> str:
    """A fresh path stem in `directory`, claimed by creating its sidecar JSON exclusively: runs writing into one
    folder at once each get their own name (reading the listing alone let two take one). `NNNN` in order, or
    with `unguessable` 16 random hex digits (the web UI: one client cannot fetch another's results by name)."""
    os.makedirs(directory, exist_ok=True)
    if unguessable:
        names = (secrets.token_hex(8) for _ in iter(int, 1))
    else:
        taken = {int(n.split(".")[0]) for n in os.listdir(directory) if n.split(".")[0].isdigit()}
        names = (f"{n:04d}" for n in itertools.count(max(taken, default=-1) + 1))
    for name in names:
        stem = os.path.join(directory, name)
        try:
            os.close(os.open(stem + ".json", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return stem
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def save_outputs(
    frames: np.ndarray,
    settings: dict[str, Any],
    directory: str,
    fps: int,
    gif: bool,
    unguessable: bool = False,
) -> dict[str, str]:
    """frames `(F, H, W, 3)` in [0, 1] -> mp4 (+ png for one frame, + gif) and a JSON of every setting, under a
    fresh name in `directory` (never another run's; random with `unguessable`)."""
    stem = next_stem(directory, unguessable)
    try:
        return _write_outputs(stem, frames, settings, fps, gif)
    except BaseException:
        for suffix in (".json", ".mp4", ".png", ".gif"):  # the claim and anything half-made go
            if os.path.exists(stem + suffix):
                os.remove(stem + suffix)
        raise


def _write_outputs(
    stem: str, frames: np.ndarray, settings: dict[str, Any], fps: int, gif: bool
) -> dict[str, str]:
    from PIL import Image

    from ..data.video_io import write_video

    uint8 = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    paths = {"video": write_video(stem + ".mp4", uint8, fps=fps)}
    if len(uint8) == 1:
        paths["image"] = stem + ".png"
        Image.fromarray(uint8[0]).save(paths["image"])
    if gif:
        paths["gif"] = stem + ".gif"
        images = [Image.fromarray(f) for f in uint8]
        images[0].save(
            paths["gif"], save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
        )
    paths["settings"] = stem + ".json"
    record = strict_json({**settings, "outputs": paths, "easyanimate_version": __version__})
    tmp = paths["settings"] + ".tmp"
    with open(tmp, "w") as fh:  # replaces the claim atomically
        json.dump(record, fh, indent=2, allow_nan=False)
    os.replace(tmp, paths["settings"])
    return paths


def strict_json(value: Any) -> Any:
    """`value` as strict JSON: non-finite floats become strings ("nan"), other objects their str()."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def run(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> dict[str, str]:
    extra = extra or {}
    pipe = load_pipeline(args)
    if getattr(args, "smooth_seams", False):
        if not hasattr(pipe.vae, "smooth_seams"):
            raise ValueError(
                f"--smooth-seams applies to upstream V2 / V3 VAEs; {args.model}'s is a {type(pipe.vae).__name__}"
            )
        pipe.vae.smooth_seams = True
    if not getattr(args, "skip_memory_check", False):
        from .memory import check_fits

        size = pipe.default_size
        total = max(args.num_frames, getattr(args, "total_frames", None) or 0)  # a long video: one segment
        check_fits(pipe, args.height or size, args.width or size, args.num_frames, args.gpu_memory_mode,
                   args.device or pipe._execution_device, cfg=args.guidance_scale > 1, output_frames=total)  # fmt: skip
    settings = {k: v for k, v in vars(args).items()}
    settings["sampler"] = type(pipe.scheduler).__name__ if args.sampler is None else args.sampler
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    kwargs = dict(
        negative_prompt=args.negative_prompt,
        height=args.height,
        width=args.width,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        generator=generator,
    )
    if getattr(args, "stage_steps", None):
        kwargs["stage_steps"] = args.stage_steps
    total = getattr(args, "total_frames", None)
    if total and total > args.num_frames:
        from .long_video import generate_long_video

        video = generate_long_video(
            pipe, args.prompt, total, num_frames=args.num_frames, overlap=args.overlap, **kwargs, **extra
        )
        frames = video[0].permute(1, 2, 3, 0).numpy()
    else:
        frames = pipe(args.prompt, num_frames=args.num_frames, output_type="np", **kwargs, **extra).frames[0]
    settings["seconds"] = round(time.perf_counter() - start, 3)
    settings["frames_written"], settings["height_px"], settings["width_px"] = frames.shape[:3]
    paths = save_outputs(frames, settings, args.output_dir, args.fps, args.gif)
    print(f"wrote {paths['video']} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]})")
    return paths


def main_guarded(fn) -> int:
    """Run a CLI body: clear one-line errors for bad input instead of stack traces. Load and I/O failures
    (unreadable images, videos or weights) name their type; set EASYANIMATE_DEBUG=1 for the traceback."""
    from safetensors import SafetensorError

    try:
        fn()
    except (FileNotFoundError, ValueError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError, SafetensorError) as err:
        if os.environ.get("EASYANIMATE_DEBUG"):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"error: {type(err).__name__}: {first}", file=sys.stderr)
        return 2
    return 0
