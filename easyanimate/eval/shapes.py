"""Reads a synthetic-shapes video back: background, shape colour, shape kind, and motion direction.

Used to score generations against their prompts (colour / direction / shape accuracy) for the demo model.
Background: the most common border colour; foreground: pixels far from it; colour: nearest palette colour to
the foreground median; shape: how much of its bounding box the mask fills (square ~1, circle ~pi/4, triangle
~1/2, after filling each row between its outer pixels so outlines read as their shape); direction: the
centroid's track from the first to the last frame; style: "outline" when the middle of the shape shows the
background (the demo LoRA's style), else "filled".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..data.synthetic import BACKGROUNDS, COLORS, SHAPES

DIRECTION_WORDS = ("left", "right", "up", "down", "still")


@dataclass
class Reading:
    color: str | None
    shape: str | None
    direction: str | None
    background: str | None
    style: str | None = None


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    return min(palette, key=lambda k: float(np.sum((np.asarray(palette[k], float) - rgb) ** 2)))


def _foreground(frame: np.ndarray, bg: np.ndarray, threshold: float = 60.0) -> np.ndarray:
    return np.linalg.norm(frame.astype(float) - bg[None, None], axis=-1) > threshold


def _fill_rows(mask: np.ndarray) -> np.ndarray:
    """Fill each row between its first and last foreground pixel (exact for convex shapes)."""
    out = mask.copy()
    for y in np.nonzero(mask.any(axis=1))[0]:
        xs = np.nonzero(mask[y])[0]
        out[y, xs[0] : xs[-1] + 1] = True
    return out


def _center_fill(mask: np.ndarray) -> float:
    """Share of foreground in the 3x3 pixels at the middle of the mask's bounding box."""
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    return float(mask[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2].mean())


def read_video(frames: np.ndarray, still_fraction: float = 0.08) -> Reading:
    """frames: `(F, H, W, 3)` uint8."""
    f, h, w, _ = frames.shape
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1).reshape(
        -1, 3
    )
    bg_rgb = np.median(border.astype(float), axis=0)
    background = _nearest(bg_rgb, BACKGROUNDS)
    masks = np.stack([_foreground(fr, bg_rgb) for fr in frames])
    if masks.sum() < 4:
        return Reading(None, None, None, background)
    color = _nearest(np.median(frames[masks].astype(float), axis=0), COLORS)  # median: edges blend
    fills, centers = [], []
    for m in masks[[0, f // 2, -1]]:
        ys, xs = np.nonzero(m)
        if len(ys) >= 4:
            box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
            fills.append(_fill_rows(m).sum() / box)
            centers.append(_center_fill(m))
    fill = float(np.median(fills)) if fills else 0.0
    shape = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
    style = ("outline" if np.median(centers) < 0.5 else "filled") if centers else None
    centroids = [np.argwhere(m).mean(axis=0) for m in masks if m.sum() >= 4]
    direction = None
    if len(centroids) >= 2:
        dy, dx = centroids[-1] - centroids[0]
        if max(abs(dx), abs(dy)) < still_fraction * max(h, w):
            direction = "still"
        elif abs(dx) >= abs(dy):
            direction = "right" if dx > 0 else "left"
        else:
            direction = "down" if dy > 0 else "up"
    return Reading(color, shape, direction, background, style)


def parse_prompt(prompt: str) -> Reading:
    """The attributes a shapes prompt asks for ("a red circle moving left on a gray background")."""
    words = re.findall(r"[a-z]+", prompt.lower())

    def first(options):
        return next((w for w in words if w in options), None)

    direction = "still" if "still" in words else first(DIRECTION_WORDS)
    bg = re.search(r"on an? (\w+) background", prompt.lower())
    return Reading(first(COLORS), first(SHAPES), direction, bg.group(1) if bg else None)


def score(readings: list[Reading], prompts: list[str]) -> dict[str, float]:
    """Accuracy of colour, shape and direction over a set of generations."""
    wanted = [parse_prompt(p) for p in prompts]
    out = {}
    for field in ("color", "shape", "direction", "background"):
        pairs = [
            (getattr(r, field), getattr(w, field)) for r, w in zip(readings, wanted) if getattr(w, field)
        ]
        out[f"{field}_accuracy"] = float(np.mean([a == b for a, b in pairs])) if pairs else float("nan")
    return out
