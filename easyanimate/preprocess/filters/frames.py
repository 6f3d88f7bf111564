"""Uniformly spaced frames of a clip, shared by the filters."""

from __future__ import annotations

import numpy as np

from ...data.video_io import read_frames


def sample_frames(path: str, count: int, num_frames: int) -> np.ndarray:
    if num_frames <= 0:
        raise ValueError(f"{path} has no frames")
    idx = sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, count)})
    return read_frames(path, idx)


def to_gray(frame: np.ndarray, width: int = 256) -> np.ndarray:
    """Grayscale, resized to `width` (scores comparable across resolutions)."""
    import cv2

    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    return cv2.resize(gray, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
