"""Learning curve of a text-to-video run: accuracy and direction sensitivity at every kept checkpoint.

Each checkpoint's `transformer/` is put into the run's base pipeline and scored on held-out prompts (colour,
shape and direction read by the shapes analyzer) and on reference clips (caption sensitivity per word), so a
recipe change can be judged after its first checkpoints instead of after a whole run.

    python -m easyanimate.eval curve --run outputs/demo/t2v --base outputs/demo/t2i/pipeline --output curve
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np
import torch

from ..data.synthetic import generate
from ..data.video_io import read_frames
from .demo import _generate, heldout_prompts
from .sensitivity import caption_sensitivity
from .shapes import read_video, score

SERIES = (  # key in a row, label, colour
    ("direction_accuracy", "direction", (220, 30, 30)),
    ("color_accuracy", "colour", (30, 60, 220)),
    ("shape_accuracy", "shape", (30, 160, 40)),
    ("direction_sensitivity", "direction sensitivity (x1, capped at 1)", (140, 40, 190)),
)


def checkpoint_step(path: str) -> int:
    return int(os.path.basename(path.rstrip("/")).split("-")[-1])


def run_checkpoints(run_dir: str) -> list[str]:
    """The run's complete checkpoints holding a `transformer/`, oldest first (`.tmp` ones are unfinished)."""
    root = os.path.join(run_dir, "checkpoints")
    names = os.listdir(root) if os.path.isdir(root) else []
    found = [os.path.join(root, n) for n in names if re.fullmatch(r"checkpoint-\d+", n)]
    return sorted((p for p in found if os.path.isdir(os.path.join(p, "transformer"))), key=checkpoint_step)


@torch.no_grad()
def evaluate_checkpoint(
    pipe, prompts: list[str], clips: list[torch.Tensor], texts: list[str], seed: int, steps: int
) -> dict[str, Any]:
    readings = []
    for i, prompt in enumerate(prompts):
        frames = _generate(pipe, prompt, seed + i, steps=steps, guidance=6.0, frames=17)
        readings.append(read_video((frames * 255).round().astype(np.uint8)))
    row = score(readings, prompts)
    latents = [pipe.vae.encode_latents(c[None])[0] for c in clips]
    sens = caption_sensitivity(pipe, latents, texts)
    row.update({f"{k}_sensitivity": v["relative_increase"] for k, v in sens.items() if v.get("n")})
    return row


def learning_curve(
    run_dir: str,
    base: str,
    output: str,
    num_prompts: int = 24,
    num_clips: int = 16,
    steps: int = 25,
    seed: int = 10_000,
) -> list[dict[str, Any]]:
    """Rows `{step, direction_accuracy, color_accuracy, shape_accuracy, *_sensitivity}` for every complete
    checkpoint of `run_dir`, written to `output`/curve.json and plotted to `output`/curve.png."""
    from ..pipeline.loading import load_pipeline

    checkpoints = run_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(f"no checkpoint with a transformer/ under {run_dir}/checkpoints")
    os.makedirs(output, exist_ok=True)
    prompts = heldout_prompts(num_prompts, seed)
    ref = os.path.join(output, "reference")
    records = generate(ref, num_videos=num_clips, num_images=0, size=64, frames=17, seed=seed)
    clips = [
        torch.from_numpy(read_frames(os.path.join(ref, r["file_path"])) / 127.5 - 1)
        .float()
        .permute(3, 0, 1, 2)
        for r in records
    ]
    rows = []
    for path in checkpoints:
        pipe = load_pipeline(base, transformer=os.path.join(path, "transformer"), device="cpu")
        pipe.set_progress_bar_config(disable=True)
        rows.append(
            {
                "step": checkpoint_step(path),
                **evaluate_checkpoint(pipe, prompts, clips, [r["text"] for r in records], seed, steps),
            }
        )
    with open(os.path.join(output, "curve.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    plot_curve(rows, os.path.join(output, "curve.png"))
    return rows


def plot_curve(rows: list[dict[str, Any]], path: str, size: tuple[int, int] = (640, 400)) -> str:
    """A line chart of the series against steps (PIL; values in [0, 1], sensitivity capped at 1)."""
    from PIL import Image, ImageDraw

    w, h = size
    left, right, top, bottom = 50, 20, 20, 90
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    steps = [r["step"] for r in rows]
    lo, hi = min(steps), max(max(steps), min(steps) + 1)

    def xy(step: float, value: float) -> tuple[float, float]:
        x = left + (step - lo) / (hi - lo) * (w - left - right)
        return x, top + (1 - min(max(value, 0.0), 1.0)) * (h - top - bottom)

    for v in (0, 0.25, 0.5, 0.75, 1.0):  # grid and axis labels
        y = xy(lo, v)[1]
        d.line([(left, y), (w - right, y)], fill=(225, 225, 225))
        d.text((8, y - 6), f"{v:.2f}", fill="black")
    for s in steps:
        x = xy(s, 0)[0]
        d.text((x - 10, h - bottom + 4), str(s), fill="black")
    d.text((w // 2 - 20, h - bottom + 18), "t2v step", fill="black")
    for i, (key, label, colour) in enumerate(SERIES):
        points = [xy(r["step"], r[key]) for r in rows if key in r and np.isfinite(r[key])]
        if len(points) > 1:
            d.line(points, fill=colour, width=2)
        for x, y in points:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        ly = h - bottom + 36 + 12 * i
        d.line([(left, ly + 6), (left + 20, ly + 6)], fill=colour, width=2)
        d.text((left + 26, ly), label, fill="black")
    img.save(path)
    return path
