"""Duration, resolution and frame rate."""

from __future__ import annotations

from ..config import BasicFilter


def basic_filter(record: dict, cfg: BasicFilter) -> tuple[bool, str | None]:
    seconds = record["num_frames"] / record["fps"] if record["fps"] else 0.0
    record["seconds"] = round(seconds, 3)
    if seconds < cfg.min_seconds:
        return False, "basic: too short"
    if record["width"] < cfg.min_width or record["height"] < cfg.min_height:
        return False, "basic: resolution"
    if record["fps"] < cfg.min_fps:
        return False, "basic: fps"
    return True, None
