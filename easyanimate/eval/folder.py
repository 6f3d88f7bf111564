"""Metrics over a folder of videos: what `python -m easyanimate.eval videos` computes.

Each video may have a sidecar JSON with the same stem (what predict_t2v.py / predict_i2v.py write) whose
"prompt" is used by the shapes analyzer and the CLIP score. With a reference folder: PSNR / SSIM of videos
paired by file name (VAE reconstructions against their sources), and FVD between the two sets when a local
feature encoder is given.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.video_io import media_type, read_frames
from .consistency import temporal_consistency
from .fvd import fvd
from .metrics import psnr, ssim
from .shapes import read_video, score


def list_videos(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"not a folder: {folder}")
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if media_type(n) == "video")


def sidecar_prompt(video_path: str) -> str | None:
    path = os.path.splitext(video_path)[0] + ".json"
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        return json.load(fh).get("prompt")


def _pixels(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(frames, dtype=np.float32) / 255.0).permute(0, 3, 1, 2)  # (F, 3, H, W)


def paired_reconstruction(videos: list[str], reference: str) -> dict[str, float]:
    """Mean PSNR / SSIM of each video against the reference video of the same name."""
    ps, ss = [], []
    for path in videos:
        ref = os.path.join(reference, os.path.basename(path))
        if not os.path.isfile(ref):
            continue
        a, b = read_frames(path), read_frames(ref)
        n = min(len(a), len(b))
        if a.shape[1:] != b.shape[1:]:
            raise ValueError(f"{path} is {a.shape[1:3]} but its reference is {b.shape[1:3]}")
        ps.append(psnr(_pixels(a[:n]), _pixels(b[:n])))
        ss.append(ssim(_pixels(a[:n]), _pixels(b[:n])))
    if not ps:
        return {}
    return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "pairs": len(ps)}


def evaluate_folder(
    folder: str,
    reference: str | None = None,
    encoder: str | None = None,
    clip: str | None = None,
    shapes: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    videos = list_videos(folder)
    if not videos:
        raise FileNotFoundError(f"no videos in {folder}")
    feats = None
    if encoder:
        from .fvd import ImageFeatureEncoder

        feats = ImageFeatureEncoder(encoder)
    scorer = None
    if clip:
        from .clip_score import CLIPScorer

        scorer = CLIPScorer(clip)
    consistency, clip_scores, readings, prompts, features = [], [], [], [], []
    per_video = []
    for path in tqdm(videos, desc="evaluate", disable=not progress):
        frames = read_frames(path)
        prompt = sidecar_prompt(path)
        row: dict[str, Any] = {"video": os.path.basename(path), "prompt": prompt}
        if len(frames) > 1:
            row["temporal_consistency"] = temporal_consistency(frames)
            consistency.append(row["temporal_consistency"])
        if scorer is not None and prompt:
            row["clip_score"] = scorer(frames, prompt)
            clip_scores.append(row["clip_score"])
        if shapes and prompt:
            reading = read_video(frames)
            row["reading"] = asdict(reading)
            readings.append(reading)
            prompts.append(prompt)
        if feats is not None:
            features.append(feats(frames))
        per_video.append(row)
    out: dict[str, Any] = {"videos": len(videos)}
    if consistency:
        out["temporal_consistency"] = float(np.mean(consistency))
    if clip_scores:
        out["clip_score"] = float(np.mean(clip_scores))
    if readings:
        out["shapes"] = score(readings, prompts) | {"n": len(readings)}
    if reference:
        out["reconstruction"] = paired_reconstruction(videos, reference)
        if feats is not None:
            ref_feats = np.stack([feats(read_frames(p)) for p in list_videos(reference)])
            out["fvd"] = fvd(np.stack(features), ref_feats)
    out["per_video"] = per_video
    return out
