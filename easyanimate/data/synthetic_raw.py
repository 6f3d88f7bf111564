"""Synthetic raw footage (textured pans, scene cuts, text, still shots) for the preprocessing tests and
benchmark: made on the fly, nothing downloaded."""

from __future__ import annotations

import os

import numpy as np

from .video_io import write_video

FPS = 8


def textured(h, w, rng, base):
    """A detailed background at several scales (sharp, contrasty, trackable), like real footage."""
    import cv2

    coarse = cv2.resize(
        rng.uniform(-70, 70, (h // 8, w // 8)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
    )
    fine = rng.uniform(-25, 25, (h, w)).astype(np.float32)
    return np.clip(np.array(base)[None, None] + (coarse + fine)[..., None], 0, 255).astype(np.uint8)


def moving_square(bg, frames, speed, rng, color=(250, 250, 250), size=24, top=40):
    """A camera pan over the background (`speed` px/frame) with a square crossing it."""
    h, w = bg.shape[:2]
    out = np.stack([np.roll(bg, int(round(speed * t)), axis=1) for t in range(frames)])
    for t in range(frames):
        x = int(8 + speed * t) % (w - size)
        out[t, top : top + size, x : x + size] = color
    return out


def shaky(bg, frames, rng, speed=10):
    """Chaotic: a whip pan (`speed` px/frame) with vertical shake."""
    return np.stack([np.roll(bg, (int(rng.integers(-3, 4)), speed * t), axis=(0, 1)) for t in range(frames)])


def make_raw_videos(folder: str, seconds: float = 4.0, scale: int = 1) -> dict[str, str]:
    """Six raw videos at 128x96 x `scale` (the benchmark uses larger ones, so a task's work is like real
    footage's rather than Ray's per-task cost)."""
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    n = int(seconds * FPS)
    h, w, k = 96 * scale, 128 * scale, scale
    square = dict(size=24 * k, top=40 * k)
    scene_a = moving_square(textured(h, w, rng, (200, 40, 40)), n, 1.5 * k, rng, **square)
    scene_b = moving_square(
        textured(h, w, rng, (40, 40, 200)), n, 1.5 * k, rng, color=(20, 240, 20), **square
    )
    paths = {
        "two_scenes": np.concatenate([scene_a, scene_b]),
        "static": np.repeat(textured(h, w, rng, (120, 160, 90))[None], n, 0),
        "chaotic": shaky(textured(h, w, rng, (128, 128, 128)), n, rng, speed=10 * k),
        "dark": (moving_square(textured(h, w, rng, (60, 60, 60)), n, 1.5 * k, rng, **square) * 0.08).astype(
            np.uint8
        ),
    }
    import cv2

    text = moving_square(textured(h, w, rng, (90, 90, 90)), n, 1.5 * k, rng, **square)
    for t in range(n):
        frame = np.ascontiguousarray(text[t])
        cv2.rectangle(frame, (0, 60 * k), (w, h), (255, 255, 255), -1)
        cv2.putText(frame, "SALE 50%", (4 * k, 88 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.9 * k, (0, 0, 0), 2 * k)
        text[t] = frame
    paths["text"] = text
    out = {name: write_video(os.path.join(folder, f"{name}.mp4"), v, fps=FPS) for name, v in paths.items()}
    corrupt = os.path.join(folder, "corrupt.mp4")
    with open(corrupt, "wb") as fh:
        fh.write(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    out["corrupt"] = corrupt
    return out
