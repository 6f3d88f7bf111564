"""Swapping one attribute word of a caption ("moving left" -> "moving right"): the wrong caption that caption
sensitivity (eval) measures against and that the caption contrast term (training) trains against."""

from __future__ import annotations

import re

# which word replaces which; directions swap with their opposite so the swapped caption is as wrong as can be
SWAPS: dict[str, dict[str, str]] = {
    "color": {
        "red": "green",
        "green": "blue",
        "blue": "yellow",
        "yellow": "purple",
        "purple": "orange",
        "orange": "red",
    },
    "shape": {"circle": "square", "square": "triangle", "triangle": "circle"},
    "direction": {"left": "right", "right": "left", "up": "down", "down": "up"},
}


def swap_word(caption: str, swaps: dict[str, str]) -> str | None:
    """The caption with its first word found in `swaps` replaced, or None when it has none."""
    for match in re.finditer(r"[A-Za-z]+", caption):
        word = match.group().lower()
        if word in swaps:
            return caption[: match.start()] + swaps[word] + caption[match.end() :]
    return None
