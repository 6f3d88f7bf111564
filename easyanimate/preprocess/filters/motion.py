"""Motion: mean Farneback optical-flow magnitude between consecutive frames at uniformly spaced positions
(pixels per frame at 256 px width), kept within [min, max]: drops static and chaotic clips."""

from __future__ import annotations

import numpy as np

from ...data.video_io import read_frames
from ..config import MotionFilter
from .frames import to_gray


def flow_magnitude(a: np.ndarray, b: np.ndarray) -> float:
    import cv2

    flow = cv2.calcOpticalFlowFarneback(to_gray(a), to_gray(b), None, 0.5, 4, 21, 3, 5, 1.2, 0)
    return float(np.linalg.norm(flow, axis=-1).mean())


def motion_score(path: str, num_frames: int, positions: int) -> float:
    """Mean flow magnitude over `positions` pairs of consecutive frames."""
    if num_frames < 2:
        return 0.0
    starts = sorted({int(round(p)) for p in np.linspace(0, num_frames - 2, positions)})
    frames = read_frames(path, sorted({i for s in starts for i in (s, s + 1)}))
    lookup = dict(zip(sorted({i for s in starts for i in (s, s + 1)}), frames))
    return float(np.mean([flow_magnitude(lookup[s], lookup[s + 1]) for s in starts]))


def motion_filter(record: dict, cfg: MotionFilter) -> tuple[bool, str | None]:
    record["motion"] = round(
        motion_score(record["file_path_abs"], int(record["num_frames"]), cfg.num_frames), 4
    )
    if record["motion"] < cfg.min_motion:
        return False, "motion: static"
    if record["motion"] > cfg.max_motion:
        return False, "motion: chaotic"
    return True, None
