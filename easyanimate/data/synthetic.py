"""Synthetic shapes dataset: coloured shapes moving on plain backgrounds, with exact captions.

    python -m easyanimate.data.synthetic --output datasets/demo --num-videos 200 --num-images 100 \
        --size 64 --frames 17 --seed 0
    python -m easyanimate.data.synthetic --output datasets/outline --num-videos 0 --num-images 60 --style outline

Writes H.264 mp4 videos and PNG images plus `metadata.json` in the "normal" format (`file_path`, `text`,
`type`, `width`, `height`, `num_frames`, and the ground-truth `shape`, `color`, `direction`, `background`,
`style`). `--style outline` draws only the shapes' outlines with the same captions: the demo LoRA's new style.
Deterministic for a seed. It feeds the demo model, the tests and the benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from .video_io import write_video

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 190),
    "orange": (250, 140, 20),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
STYLES = ("filled", "outline")
OUTLINE_WIDTH = 0.4  # outline thickness as a share of the shape's half-size
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "still": (0, 0),
}


@dataclass(frozen=True)
class Scene:
    shape: str
    color: str
    direction: str
    background: str
    style: str = "filled"

    def caption(self, video: bool = True) -> str:
        if not video:
            return f"a {self.color} {self.shape} on a {self.background} background"
        motion = "standing still" if self.direction == "still" else f"moving {self.direction}"
        return f"a {self.color} {self.shape} {motion} on a {self.background} background"


def all_captions() -> list[str]:
    """Every video caption the generator can write (colour x shape x direction x background): the
    vocabulary of the tiny caption tokenizers in tests and benchmarks."""
    return [
        Scene(shape, color, direction, background).caption()
        for color in COLORS
        for shape in SHAPES
        for direction in DIRECTIONS
        for background in BACKGROUNDS
    ]


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float, supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage `(size, size)` in [0, 1] of a shape of half-size `r` centred at (cx, cy)."""
    n = size * supersample
    coords = (np.arange(n) + 0.5) / supersample
    x, y = np.meshgrid(coords, coords)
    dx, dy = x - cx, y - cy
    if shape == "circle":
        inside = dx**2 + dy**2 <= r**2
    elif shape == "square":
        inside = (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    elif shape == "triangle":  # pointing up, apex at cy - r
        top, bottom = cy - r, cy + r * 0.8
        half_width = (y - top) / (bottom - top) * r
        inside = (y >= top) & (y <= bottom) & (np.abs(dx) <= half_width)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")
    return inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def render(scene: Scene, size: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """`(frames, size, size, 3)` uint8: the shape crosses most of the frame in its direction."""
    r = size / 7
    margin = r + 1
    travel = size - 2 * margin
    ddx, ddy = DIRECTIONS[scene.direction]
    # start on the side the shape moves away from; the other coordinate is random
    cx0 = margin + (travel if ddx < 0 else 0 if ddx > 0 else rng.uniform(0, travel))
    cy0 = margin + (travel if ddy < 0 else 0 if ddy > 0 else rng.uniform(0, travel))
    step = travel / max(frames - 1, 1)
    bg = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    fg = np.array(COLORS[scene.color], dtype=np.float32)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        cx, cy = cx0 + ddx * step * t, cy0 + ddy * step * t
        m = shape_mask(scene.shape, size, cx, cy, r)
        if scene.style == "outline":
            m = np.clip(m - shape_mask(scene.shape, size, cx, cy, r * (1 - OUTLINE_WIDTH)), 0, 1)
        m = m[..., None]
        out[t] = np.clip(bg * (1 - m) + fg * m, 0, 255).round().astype(np.uint8)
    return out


def render_crowd(scenes: list[Scene], size: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Several shapes of random sizes on the first scene's background, each on its own straight track.

    Dense data for the VAE: a lone shape covers ~6% of a frame, so most of a plain reconstruction loss is
    background; crowds put edges and colours in every batch and the shapes come in far sooner.
    """
    out = np.tile(np.array(BACKGROUNDS[scenes[0].background], dtype=np.float32), (frames, size, size, 1))
    for scene in scenes:
        r = rng.uniform(size / 13, size / 4)
        cx0, cy0 = rng.uniform(0, size, 2)
        ddx, ddy = DIRECTIONS[scene.direction]
        step = rng.uniform(0.5, 1.5) * size / 2 / max(frames - 1, 1)
        fg = np.array(COLORS[scene.color], dtype=np.float32)
        for t in range(frames):
            m = shape_mask(scene.shape, size, cx0 + ddx * step * t, cy0 + ddy * step * t, r)[..., None]
            out[t] = out[t] * (1 - m) + fg * m
    return np.clip(out, 0, 255).round().astype(np.uint8)


def random_scene(rng: np.random.Generator, video: bool = True, style: str = "filled") -> Scene:
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {STYLES}")
    return Scene(
        shape=SHAPES[rng.integers(len(SHAPES))],
        color=list(COLORS)[rng.integers(len(COLORS))],
        direction=list(DIRECTIONS)[rng.integers(len(DIRECTIONS))] if video else "still",
        background=list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))],
        style=style,
    )


def balanced_scenes(
    count: int, rng: np.random.Generator, video: bool = True, style: str = "filled"
) -> list[Scene]:
    """`count` scenes that go through every combination (colour x shape x background, x direction for videos)
    in a fresh random order each round: every look comes in every direction as evenly as `count` allows, so
    the caption's words are the only thing that tells otherwise-alike clips apart."""
    directions = list(DIRECTIONS) if video else ["still"]
    combos = [(sh, c, d, b) for c in COLORS for sh in SHAPES for d in directions for b in BACKGROUNDS]
    out: list[Scene] = []
    while len(out) < count:
        out += [Scene(*combos[i], style=style) for i in rng.permutation(len(combos))]
    return out[:count]


def generate(
    output: str,
    num_videos: int,
    num_images: int,
    size: int = 64,
    frames: int = 17,
    seed: int = 0,
    fps: int = 8,
    style: str = "filled",
    crowd: int = 1,
    balanced: bool = False,
) -> list[dict]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    if balanced:
        video_scenes = balanced_scenes(num_videos, rng, style=style)
        image_scenes = balanced_scenes(num_images, rng, video=False, style=style)
    os.makedirs(os.path.join(output, "videos"), exist_ok=True)
    os.makedirs(os.path.join(output, "images"), exist_ok=True)
    records = []
    for i in tqdm(range(num_videos), desc="videos", disable=num_videos < 50):
        scene = video_scenes[i] if balanced else random_scene(rng, style=style)
        rel = f"videos/{i:05d}.mp4"
        if crowd > 1:
            extra = [random_scene(rng) for _ in range(int(rng.integers(1, crowd)))]
            clip = render_crowd([scene, *extra], size, frames, rng)
        else:
            clip = render(scene, size, frames, rng)
        write_video(os.path.join(output, rel), clip, fps=fps)
        records.append(
            {"file_path": rel, "text": scene.caption(), "type": "video", "width": size, "height": size}
            | {"num_frames": frames, **scene.__dict__}
        )
    for i in range(num_images):
        scene = image_scenes[i] if balanced else random_scene(rng, video=False, style=style)
        rel = f"images/{i:05d}.png"
        if crowd > 1:
            extra = [random_scene(rng, video=False) for _ in range(int(rng.integers(1, crowd)))]
            image = render_crowd([scene, *extra], size, 1, rng)[0]
        else:
            image = render(scene, size, 1, rng)[0]
        Image.fromarray(image).save(os.path.join(output, rel))
        records.append(
            {
                "file_path": rel,
                "text": scene.caption(video=False),
                "type": "image",
                "width": size,
                "height": size,
            }
            | {"num_frames": 1, **scene.__dict__}
        )
    with open(os.path.join(output, "metadata.json"), "w") as fh:
        json.dump(records, fh, indent=1)
    return records


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="datasets/demo")
    p.add_argument("--num-videos", type=int, default=200)
    p.add_argument("--num-images", type=int, default=100)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--fps", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--style", choices=STYLES, default="filled", help="outline: the demo LoRA's style")
    p.add_argument(
        "--crowd", type=int, default=1, help="up to this many shapes of random sizes per item (VAE data)"
    )
    p.add_argument(
        "--balanced",
        action="store_true",
        help="every look (colour, shape, background) in every direction, evenly (default: each drawn at random)",
    )
    a = p.parse_args(argv)
    records = generate(
        a.output, a.num_videos, a.num_images, a.size, a.frames, a.seed, a.fps, a.style, a.crowd, a.balanced
    )
    print(f"wrote {len(records)} items and metadata.json to {a.output}")


if __name__ == "__main__":
    main()
