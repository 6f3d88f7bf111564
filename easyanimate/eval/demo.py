"""Evaluate the demo model on the synthetic-shapes domain (`python -m easyanimate.eval demo`).

On prompts x seeds not used in training it measures what issue #9 asks of the demo model:
- text-to-video: colour / shape / direction accuracy read back by the shapes analyzer, split by whether
  the caption occurs in the training metadata (the caption space is small: 6 colours x 3 shapes x 5 motions
  x 3 backgrounds) and the generation time per video;
- image-to-video (InP model): PSNR of frame 0 against the given image (with the start latent re-imposed, the
  pipeline's default, and without: the model's own frame 0), and the analyzer's accuracy;
- the LoRA: share of outlined shapes with it loaded, without it, and whether unloading restores the base
  outputs exactly;
- the VAE: PSNR / SSIM of 17-frame reconstructions of new clips, and the analyzer on them (the ceiling);
- caption sensitivity: the model's loss on those clips with a colour / shape / direction word swapped,
  relative to the true caption (0 = the word is not read at all).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.formats import load_records
from ..data.synthetic import BACKGROUNDS, COLORS, DIRECTIONS, SHAPES, Scene, generate
from ..data.video_io import read_frames
from .folder import evaluate_folder
from .metrics import psnr, ssim
from .sensitivity import caption_sensitivity
from .shapes import read_video, score


def heldout_prompts(count: int, seed: int = 0) -> list[str]:
    """`count` distinct video captions drawn from the whole caption space (with repeats past its size)."""
    scenes = [Scene(*s) for s in itertools.product(SHAPES, COLORS, DIRECTIONS, BACKGROUNDS)]
    order = np.random.default_rng(seed).permutation(len(scenes))
    return [Scene(**{**scenes[order[i % len(scenes)]].__dict__}).caption() for i in range(count)]


def _save(frames: np.ndarray, folder: str, name: str, settings: dict[str, Any]) -> str:
    from ..data.video_io import write_video

    os.makedirs(folder, exist_ok=True)
    path = write_video(
        os.path.join(folder, name + ".mp4"), (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    )
    with open(os.path.join(folder, name + ".json"), "w") as fh:
        json.dump(settings, fh, indent=1)
    return path


def _generate(pipe, prompt: str, seed: int, steps: int, guidance: float, frames: int, **extra) -> np.ndarray:
    return pipe(
        prompt,
        num_frames=frames,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **extra,
    ).frames[0]


def _split_accuracy(rows: list[dict], seen: set[str]) -> dict[str, Any]:
    from .shapes import Reading

    out = {}
    for name, keep in (("seen_captions", True), ("unseen_captions", False)):
        sel = [r for r in rows if (r["prompt"] in seen) == keep]
        if sel:
            out[name] = score([Reading(**r["reading"]) for r in sel], [r["prompt"] for r in sel]) | {
                "n": len(sel)
            }
    return out


def evaluate_demo(
    model: str,
    output: str,
    inpaint_model: str | None = None,
    lora: str | None = None,
    lora_weight: float = 1.0,
    train_metadata: str | None = None,
    num_prompts: int = 120,
    num_i2v: int = 40,
    num_lora: int = 30,
    num_long: int = 0,
    steps: int = 25,
    guidance_scale: float = 6.0,
    num_frames: int = 17,
    seed: int = 10_000,
) -> dict[str, Any]:
    from ..pipeline.adapters import load_lora, unload_loras
    from ..pipeline.pipeline_easyanimate import EasyAnimatePipeline

    os.makedirs(output, exist_ok=True)
    results: dict[str, Any] = {
        "model": model,
        "settings": {
            "steps": steps,
            "guidance_scale": guidance_scale,
            "num_frames": num_frames,
            "seed": seed,
        },
    }
    pipe = EasyAnimatePipeline.from_pretrained(model, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    gen = dict(steps=steps, guidance=guidance_scale, frames=num_frames)

    # text-to-video on prompts x seeds the training never used (generation seeds start at `seed`)
    prompts = heldout_prompts(num_prompts, seed)
    seen = {r.text for r in load_records("normal", train_metadata)} if train_metadata else set()
    t2v_dir = os.path.join(output, "t2v")
    start = time.perf_counter()
    for i, prompt in enumerate(tqdm(prompts, desc="t2v")):
        frames = _generate(pipe, prompt, seed + i, **gen)
        _save(frames, t2v_dir, f"{i:04d}", {"prompt": prompt, "seed": seed + i, "seen": prompt in seen})
    seconds = (time.perf_counter() - start) / len(prompts)
    t2v = evaluate_folder(t2v_dir, shapes=True, progress=False)
    results["t2v"] = {
        **t2v["shapes"],
        "temporal_consistency": t2v["temporal_consistency"],
        "seconds_per_video": seconds,
        **(_split_accuracy(t2v["per_video"], seen) if seen else {}),
    }

    # videos of twice the length (the first `num_long` prompts, same seeds): does the model keep going?
    if num_long:
        long_dir = os.path.join(output, "long")
        long_gen = {**gen, "frames": 2 * num_frames - 1}
        for i, prompt in enumerate(tqdm(prompts[:num_long], desc="long")):
            frames = _generate(pipe, prompt, seed + i, **long_gen)
            _save(frames, long_dir, f"{i:04d}", {"prompt": prompt, "seed": seed + i})
        long = evaluate_folder(long_dir, shapes=True, progress=False)
        results["long"] = {
            **long["shapes"],
            "num_frames": long_gen["frames"],
            "temporal_consistency": long["temporal_consistency"],
        }

    # the VAE on new clips, and those clips' first frames for image-to-video
    ref_dir = os.path.join(output, "reference")
    records = generate(ref_dir, num_videos=num_i2v, num_images=0, size=64, frames=num_frames, seed=seed)
    clips = [read_frames(os.path.join(ref_dir, r["file_path"])) for r in records]
    texts = [r["text"] for r in records]
    with torch.no_grad():
        ps, ss, first, readings, latents = [], [], [], [], []
        for clip in clips:
            x = torch.from_numpy(np.array(clip, dtype=np.float32) / 127.5 - 1).permute(3, 0, 1, 2)[None]
            z = pipe.vae.encode_latents(x)
            latents.append(z[0])
            rec = pipe.vae.decode_latents(z).clamp(-1, 1)
            a, b = (x[0].transpose(0, 1) + 1) / 2, (rec[0].transpose(0, 1) + 1) / 2  # (F, C, H, W) in [0, 1]
            ps.append(psnr(a, b))
            ss.append(ssim(a, b))
            first.append(psnr(a[:1], b[:1]))
            readings.append(read_video((b.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)))
    if clips:  # none with --num-i2v 0: no VAE, sensitivity or image-to-video numbers
        # what the VAE alone allows: the analyzer on its reconstructions bounds the generations' accuracy, and
        # its frame-0 PSNR bounds image-to-video's (generated frames are decoded by the same VAE)
        results["vae"] = {
            "psnr": float(np.mean(ps)),
            "ssim": float(np.mean(ss)),
            "first_frame_psnr": float(np.mean(first)),
            "reconstruction_shapes": score(readings, texts),
            "clips": len(clips),
        }
        # does the model read each caption word? (its loss on these clips with the word swapped)
        results["t2v"]["caption_sensitivity"] = caption_sensitivity(pipe, latents, texts)
        results["reference_temporal_consistency"] = evaluate_folder(
            os.path.join(ref_dir, "videos"), progress=False
        )["temporal_consistency"]

    # the LoRA: style with and without it, and exact restoration on unload
    if lora:
        lora_prompts = prompts[:num_lora]
        base = [read_video(read_frames(os.path.join(t2v_dir, f"{i:04d}.mp4"))) for i in range(num_lora)]
        base0 = _generate(pipe, lora_prompts[0], seed, **gen)
        load_lora(pipe, lora, lora_weight)
        with_lora = []
        for i, prompt in enumerate(tqdm(lora_prompts, desc="lora")):
            frames = _generate(pipe, prompt, seed + i, **gen)
            _save(frames, os.path.join(output, "lora"), f"{i:04d}", {"prompt": prompt, "seed": seed + i})
            with_lora.append(read_video((frames * 255).round().astype(np.uint8)))
        unload_loras(pipe)
        again = _generate(pipe, lora_prompts[0], seed, **gen)
        results["lora"] = {
            "weight": lora_weight,
            "outline_share_with_lora": float(np.mean([r.style == "outline" for r in with_lora])),
            "outline_share_without_lora": float(np.mean([r.style == "outline" for r in base])),
            "content_with_lora": score(with_lora, lora_prompts),
            "unload_restores_exactly": bool(np.array_equal(again, base0)),
            "n": len(lora_prompts),
        }

    # image-to-video with the InP model: keeps the given first frame?
    if inpaint_model and clips:
        del pipe
        ipipe = EasyAnimatePipeline.from_pretrained(inpaint_model, dtype=torch.float32)
        ipipe.set_progress_bar_config(disable=True)
        i2v_dir = os.path.join(output, "i2v")
        # frame-0 PSNR with the pipeline's default (start latent kept) / of the model's own frame 0
        first_psnr, model_psnr = [], []
        for i, (r, clip) in enumerate(zip(tqdm(records, desc="i2v"), clips)):
            given = torch.from_numpy(clip[0].astype(np.float32) / 255).permute(2, 0, 1)
            for keep, out in ((True, first_psnr), (False, model_psnr)):
                frames = _generate(
                    ipipe, r["text"], seed + i, **gen, start_image=clip[0], keep_start_latent=keep
                )
                out.append(psnr(torch.from_numpy(frames[0].astype(np.float32)).permute(2, 0, 1), given))
                if keep:
                    _save(frames, i2v_dir, f"{i:04d}", {"prompt": r["text"], "seed": seed + i})
        i2v = evaluate_folder(i2v_dir, shapes=True, progress=False)
        results["i2v"] = {
            "first_frame_psnr": float(np.mean(first_psnr)),
            "first_frame_psnr_min": float(np.min(first_psnr)),
            "first_frame_psnr_without_keep_start_latent": float(np.mean(model_psnr)),
            **i2v["shapes"],
        }
    with open(os.path.join(output, "results.json"), "w") as fh:
        json.dump(results, fh, indent=2)
    return results
