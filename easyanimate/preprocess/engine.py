"""The preprocessing graph on Ray Data, resumable per clip.

videos --split (tasks)--> clips --basic, quality, motion (tasks)--> --OCR, aesthetic, caption (actor pools)-->
metadata.json ("normal" format) + summary.json

Every stage stores its result for an item as `state/<stage>/<id>.json` (written to a temp file, then renamed);
a re-run after a crash or Ctrl-C reads those and recomputes nothing that finished. A video that cannot be
read is recorded as failed with its reason and never stops the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from typing import Any

from ..data.video_io import media_type
from .config import PreprocessConfig
from .filters.basic import basic_filter
from .filters.motion import motion_filter
from .filters.ocr import ocr_filter
from .filters.quality import AestheticScorer, quality_filter
from .split import cut_clip, detect_scenes, plan_clips, probe

STAGES = ("split", "basic", "quality", "motion", "ocr", "caption")


def _state_path(out: str, stage: str, key: str) -> str:
    return os.path.join(out, "state", stage, f"{key}.json")


def _load_state(out: str, stage: str, key: str) -> dict | None:
    path = _state_path(out, stage, key)
    if os.path.isfile(path):
        with open(path) as fh:
            return json.load(fh)
    return None


def _save_state(out: str, stage: str, key: str, value: dict) -> None:
    path = _state_path(out, stage, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(value, fh)
    os.replace(tmp, path)


def video_key(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"{stem}-{hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]}"


def _one_thread() -> None:
    """Ray runs one task per CPU; OpenCV would otherwise spread each task over every core."""
    import cv2

    cv2.setNumThreads(1)


def split_video(row: dict, cfg: PreprocessConfig, out: str) -> list[dict]:
    _one_thread()
    key = video_key(row["source"])
    state = _load_state(out, "split", key)
    if state is None:
        start = time.perf_counter()
        try:
            info = probe(row["source"])
            if not info["num_frames"] or not info["fps"]:
                raise ValueError("no frames")
            scenes = detect_scenes(row["source"], cfg.split.threshold)
            clips = []
            for k, (a, b) in enumerate(
                plan_clips(scenes, info["fps"], cfg.split.min_seconds, cfg.split.max_seconds)
            ):
                rel = os.path.join("clips", f"{key}_{k:03d}.mp4")
                cut_clip(row["source"], os.path.join(out, rel), a, b, info["fps"])
                clips.append(
                    {
                        "clip_id": f"{key}_{k:03d}",
                        "file_path": rel,
                        "start_frame": a,
                        "end_frame": b,
                        "num_frames": b - a,
                        "fps": info["fps"],
                        "width": info["width"],
                        "height": info["height"],
                    }
                )
            state = {"clips": clips, "scenes": len(scenes), "seconds": time.perf_counter() - start}
        except Exception as err:  # corrupt / unreadable video: recorded, never fatal
            state = {
                "clips": [],
                "failed": f"{type(err).__name__}: {err}",
                "seconds": time.perf_counter() - start,
            }
        _save_state(out, "split", key, state)
    if state.get("failed"):
        return [
            {
                "clip_id": key,
                "source": row["source"],
                "failed": state["failed"],
                "dropped_by": "split: unreadable",
                "t_split": state["seconds"],
            }
        ]
    share = state["seconds"] / max(len(state["clips"]), 1)
    return [
        {
            **c,
            "source": row["source"],
            "file_path_abs": os.path.join(out, c["file_path"]),
            "dropped_by": None,
            "t_split": share,
        }
        for c in state["clips"]
    ]


def _normalize(row: dict) -> dict:
    """Ray Data moves rows as Arrow batches: a text field some rows lack comes back as None or NaN, and NaN is
    truthy. Restore None before any stage reads it."""
    for key in ("dropped_by", "failed"):
        row[key] = row.get(key) if isinstance(row.get(key), str) else None
    return row


def _stage(row: dict, stage: str, out: str, fn) -> dict:
    """Run one filter stage on a row (cached per clip); dropped rows pass through untouched."""
    if row["dropped_by"]:
        return row
    state = _load_state(out, stage, row["clip_id"])
    if state is None:
        start = time.perf_counter()
        scores = dict(row)
        try:
            keep, reason = fn(scores)
        except Exception as err:
            keep, reason = False, f"{stage}: error {type(err).__name__}"
        state = {
            "scores": {k: v for k, v in scores.items() if k not in row},
            "keep": keep,
            "reason": reason,
            "seconds": time.perf_counter() - start,
        }
        _save_state(out, stage, row["clip_id"], state)
    return {
        **row,
        **state["scores"],
        "dropped_by": None if state["keep"] else state["reason"],
        f"t_{stage}": state["seconds"],
    }


def cpu_filters(row: dict, cfg: PreprocessConfig, out: str) -> dict:
    _one_thread()
    row = _normalize(row)
    row = _stage(row, "basic", out, lambda r: basic_filter(r, cfg.basic))
    if cfg.quality.enabled:
        row = _stage(row, "quality", out, lambda r: quality_filter(r, cfg.quality))
    if cfg.motion.enabled:
        row = _stage(row, "motion", out, lambda r: motion_filter(r, cfg.motion))
    return row


class ModelStage:
    """An actor: loads its model once (OCR reader, aesthetic scorer, captioner), then scores batches of rows."""

    def __init__(self, cfg: PreprocessConfig, out: str):
        self.cfg, self.out = cfg, out
        self.ocr = None
        if cfg.ocr.backend == "easyocr":
            from .filters.ocr import EasyOCRBackend

            self.ocr = EasyOCRBackend(cfg.ocr.easyocr_models)
        self.aesthetic = AestheticScorer(cfg.quality.aesthetic_model) if cfg.quality.aesthetic_model else None
        self.captioner = None
        if cfg.caption.model:
            from .caption import Captioner

            self.captioner = Captioner(cfg.caption)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        rows = [_normalize(dict(zip(batch, values))) for values in zip(*batch.values())]
        if self.cfg.ocr.backend:
            rows = [_stage(r, "ocr", self.out, lambda x: ocr_filter(x, self.cfg.ocr, self.ocr)) for r in rows]
        if self.aesthetic is not None:
            rows = [
                _stage(
                    r, "aesthetic", self.out, lambda x: quality_filter(x, self.cfg.quality, self.aesthetic)
                )
                for r in rows
            ]
        rows = self._captions(rows)
        return {k: [r.get(k) for r in rows] for k in {k for r in rows for k in r}}

    def _captions(self, rows: list[dict]) -> list[dict]:
        from .caption import caption_frames

        todo = [
            r for r in rows if not r["dropped_by"] and _load_state(self.out, "caption", r["clip_id"]) is None
        ]
        if self.captioner is not None and todo:
            start = time.perf_counter()
            frames = [caption_frames(r, self.cfg.caption) for r in todo]
            texts = self.captioner([f[len(f) // 2] for f in frames])  # the middle sampled frame of each clip
            share = (time.perf_counter() - start) / len(todo)
            for r, text in zip(todo, texts):
                _save_state(self.out, "caption", r["clip_id"], {"text": text, "seconds": share})
        for r in rows:
            if r["dropped_by"]:
                continue
            state = _load_state(self.out, "caption", r["clip_id"])
            if state is None:  # no captioner: the source file name stands in
                state = {
                    "text": os.path.splitext(os.path.basename(r["source"]))[0].replace("_", " "),
                    "seconds": 0.0,
                }
            r["text"], r["t_caption"] = state["text"], state["seconds"]
        return rows


def find_videos(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"input folder not found: {folder}")
    return sorted(
        os.path.join(d, n) for d, _, files in os.walk(folder) for n in files if media_type(n) == "video"
    )


def run(input_dir: str, out: str, cfg: PreprocessConfig) -> dict:
    import ray

    videos = find_videos(input_dir)
    os.makedirs(out, exist_ok=True)
    if not ray.is_initialized():
        ray.init(
            address=cfg.engine.ray_address,
            num_cpus=cfg.engine.num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    start = time.perf_counter()
    ds = ray.data.from_items([{"source": v} for v in videos], override_num_blocks=max(1, len(videos)))
    tasks = ray.data.TaskPoolStrategy(size=cfg.engine.cpu_concurrency)
    ds = ds.flat_map(split_video, fn_kwargs={"cfg": cfg, "out": out}, compute=tasks)
    ds = ds.map(cpu_filters, fn_kwargs={"cfg": cfg, "out": out}, compute=tasks)
    if (
        cfg.ocr.backend or cfg.quality.aesthetic_model or cfg.caption.model
    ):  # no model: no actor holding a CPU
        ds = ds.map_batches(
            ModelStage,
            fn_constructor_kwargs={"cfg": cfg, "out": out},
            compute=ray.data.ActorPoolStrategy(size=cfg.engine.model_concurrency),
            num_cpus=cfg.engine.cpus_per_actor,
            num_gpus=cfg.engine.gpus_per_actor or None,
            batch_size=cfg.caption.batch_size,
            batch_format="default",
        )
    rows = ds.take_all()
    summary = write_outputs(out, rows, len(videos), time.perf_counter() - start)
    return summary


def _num(value) -> float:
    """Arrow fills columns a row lacks with None / NaN."""
    return 0.0 if value is None or value != value else float(value)


def write_outputs(out: str, rows: list[dict], num_videos: int, seconds: float) -> dict:
    rows = [_normalize(r) for r in rows]
    kept = sorted((r for r in rows if not r["dropped_by"] and not r["failed"]), key=lambda r: r["clip_id"])
    for r in kept:  # no captioner: the source file name stands in
        if not isinstance(r.get("text"), str):
            r["text"] = os.path.splitext(os.path.basename(r["source"]))[0].replace("_", " ")
    score_keys = ("seconds", "sharpness", "brightness", "contrast", "aesthetic", "motion", "text_area")
    metadata = [
        {
            "file_path": r["file_path"],
            "text": r.get("text", ""),
            "type": "video",
            "width": int(r["width"]),
            "height": int(r["height"]),
            "num_frames": int(r["num_frames"]),
            "fps": r["fps"],
            "source": r["source"],
            **{k: r[k] for k in score_keys if r.get(k) is not None and r[k] == r[k]},
        }
        for r in kept
    ]
    tmp = os.path.join(out, "metadata.json.tmp")
    with open(tmp, "w") as fh:
        json.dump(metadata, fh, indent=1)
    os.replace(tmp, os.path.join(out, "metadata.json"))
    clips = [r for r in rows if not r["failed"]]
    dropped = Counter(r["dropped_by"] for r in clips if r["dropped_by"])
    failures = Counter(r["failed"].split(":")[0] for r in rows if r["failed"])
    after: dict[str, int] = {}
    remaining = len(clips)
    for stage in ("basic", "quality", "motion", "ocr", "aesthetic"):
        remaining -= sum(n for reason, n in dropped.items() if reason.startswith(f"{stage}:"))
        after[stage] = remaining
    summary = {
        "videos_in": num_videos,
        "videos_failed": sum(failures.values()),
        "failures_by_reason": dict(failures),
        "clips_in": len(clips),
        "clips_kept_after": after,
        "clips_kept": len(kept),
        "dropped_by_reason": dict(dropped),
        "seconds_per_stage": {s: round(sum(_num(r.get(f"t_{s}")) for r in rows), 3) for s in STAGES},
        "wall_seconds": round(seconds, 3),
    }
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary
