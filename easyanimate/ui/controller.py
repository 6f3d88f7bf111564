"""What the web UI does, apart from the page: find models, check inputs, cache pipelines, generate.

Only names found under the model root can be chosen (nothing the browser sends becomes a path by itself),
and every bad value becomes a `UIError` with a message the page shows.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..diffusion.samplers import SAMPLERS, load_scheduler, sampler_name, samplers_for
from ..models.loading import pipeline_default_size, pipeline_shape_rule
from ..models.motion_adapter import UPSTREAM_LAYOUTS, is_motion_adapter_folder
from ..models.shape_rule import ShapeRule
from ..models.upstream_transformer import is_upstream_motion_file
from ..pipeline.memory import MEMORY_MODES, STORAGE_DTYPES, check_fits
from ..pipeline.predict import step_list

DEFAULT_FRAMES = 17  # at most this many frames by default (the nearest the model accepts)
MAX_DEFAULT_SIDE = 512  # a model built for larger sides starts the page at this (a first try stays quick)

NONE = "none"


class UIError(ValueError):
    """A problem the user can fix; shown in the page, never as a stack trace."""


class Controller:
    def __init__(
        self,
        model_root: str = "models",
        output_dir: str = "samples/easyanimate-videos",
        max_frames: int = 145,
        max_side: int = 1024,
        memory_mode: str = "none",
        device: str | None = None,
        storage_dtype: str | None = None,
        max_seconds: float = 900.0,
    ):
        if memory_mode not in MEMORY_MODES:
            raise ValueError(f"unknown GPU memory mode {memory_mode!r}; choose from {MEMORY_MODES}")
        if storage_dtype is not None and storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"unknown storage dtype {storage_dtype!r}; choose from {list(STORAGE_DTYPES)}")
        self.model_root = os.path.abspath(model_root)
        self.output_dir, self.max_frames, self.max_side = output_dir, max_frames, max_side
        self.max_seconds = max_seconds  # a generation is stopped past this (server side, whatever the client)
        self.memory_mode, self.device, self.storage_dtype = memory_mode, device, storage_dtype
        self._pipe = None
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()  # one generation at a time (the gradio queue also enforces it)

    # ------------------------------------------------------------------------------------------- discovery

    def _folder(self, kind: str) -> str:
        return os.path.join(self.model_root, kind)

    def base_models(self) -> list[str]:
        root = self._folder("Diffusion_Transformer")
        if not os.path.isdir(root):
            return []
        return sorted(
            n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, "model_index.json"))
        )

    def motion_modules(self) -> list[str]:
        """Motion-adapter folders, and upstream's bare motion-module files once per layout (the file does not
        record it: `easyanimate_v1_mm.safetensors (easyanimate-v1)`)."""
        root = self._folder("Motion_Module")
        names = sorted(os.listdir(root)) if os.path.isdir(root) else []
        found = [n for n in names if is_motion_adapter_folder(os.path.join(root, n))]
        for n in names:
            if n.endswith(".safetensors") and is_upstream_motion_file(os.path.join(root, n)):
                found += [f"{n} ({layout})" for layout in sorted(UPSTREAM_LAYOUTS)]
        return [NONE, *found]

    def motion_layout(self, name: str) -> tuple[str, str | None]:
        """A listed motion-module entry -> `(its file name, the layout named with it or None)`."""
        file, _, layout = name.partition(" (")
        return (file, layout[:-1]) if layout else (name, None)

    def loras(self) -> list[str]:
        root = self._folder("Personalized_Model")
        found = (
            sorted(n for n in os.listdir(root) if n.endswith(".safetensors")) if os.path.isdir(root) else []
        )
        return [NONE, *found]

    def resolve(self, kind: str, name: str) -> str | None:
        """The path of a listed model; anything not listed (e.g. '../x') is refused."""
        listing = {
            "Diffusion_Transformer": self.base_models,
            "Motion_Module": self.motion_modules,
            "Personalized_Model": self.loras,
        }[kind]()
        if name in (None, "", NONE) and kind != "Diffusion_Transformer":
            return None
        if name not in listing:
            raise UIError(f"unknown {kind.replace('_', ' ').lower()} {name!r}; choose one of {listing}")
        return os.path.join(self._folder(kind), name)

    def defaults(self, base: str) -> dict[str, Any]:
        """What the page starts with for a listed base model, read from its configs (no weights): the samplers
        that serve its objective and its own, its size, a frame count it accepts, its rule."""
        folder = self.resolve("Diffusion_Transformer", base)
        scheduler = load_scheduler(folder)
        rule = pipeline_shape_rule(folder)
        size = min(pipeline_default_size(folder), MAX_DEFAULT_SIDE)
        size = max(rule.size_multiple, size - size % rule.size_multiple)
        return {
            "samplers": samplers_for(scheduler),
            "sampler": sampler_name(scheduler),
            "size": size,
            "frames": rule.nearest(DEFAULT_FRAMES)[0],
            "rule": rule,
        }

    # ------------------------------------------------------------------------------------------- checks

    def shape_rule(self, base: str) -> ShapeRule:
        """The frame / size rule of a listed base model, read from its configs (no weights loaded)."""
        return pipeline_shape_rule(self.resolve("Diffusion_Transformer", base))

    def validate(
        self, width: int, height: int, frames: int, steps: int, guidance: float, rule: ShapeRule
    ) -> None:
        for name, value in (("width", width), ("height", height)):
            if value is None or not rule.size_ok(value):
                raise UIError(f"{name} must be a positive multiple of {rule.size_multiple}, got {value}")
            if value > self.max_side:
                raise UIError(f"{name} {value} is above this server's limit of {self.max_side}")
        if frames is None or not rule.frames_ok(frames):
            raise UIError(f"frames must be {rule.frames_text}, got {frames}")
        if frames > self.max_frames:
            raise UIError(f"{frames} frames is above this server's limit of {self.max_frames}")
        if steps is None or steps < 1 or steps > 200:
            raise UIError(f"steps must be between 1 and 200, got {steps}")
        if guidance is None or guidance < 0 or guidance > 30:
            raise UIError(f"guidance must be between 0 and 30, got {guidance}")

    # ------------------------------------------------------------------------------------------- models

    def pipeline(self, base: str, motion: str, lora: str, lora_weight: float, sampler: str):
        """The pipeline for this selection; models are loaded or swapped only when the selection changes."""
        from ..pipeline.adapters import load_lora, load_motion_module, unload_loras
        from ..pipeline.loading import load_pipeline

        base_path = self.resolve("Diffusion_Transformer", base)
        motion_path = self.resolve("Motion_Module", motion)
        lora_path = self.resolve("Personalized_Model", lora)
        if sampler not in SAMPLERS:
            raise UIError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")
        if self._loaded.get("base") != base_path or (
            self._loaded.get("motion") and motion_path != self._loaded["motion"]
        ):
            self._pipe = load_pipeline(
                base_path, memory_mode=self.memory_mode, device=self.device, storage_dtype=self.storage_dtype
            )
            self._loaded = {
                "base": base_path,
                "motion": None,
                "lora": None,
                "loads": self._loaded.get("loads", 0) + 1,
            }
        pipe = self._pipe
        if motion_path and motion_path != self._loaded["motion"]:
            file, layout = self.motion_layout(os.path.basename(motion_path))
            load_motion_module(pipe, os.path.join(os.path.dirname(motion_path), file), layout)
            self._loaded["motion"] = motion_path
        if (lora_path, lora_weight) != (self._loaded["lora"], self._loaded.get("lora_weight")):
            unload_loras(pipe)
            if lora_path:
                load_lora(pipe, lora_path, lora_weight)
            self._loaded["lora"], self._loaded["lora_weight"] = lora_path, lora_weight
        try:
            pipe.set_sampler(sampler)
        except ValueError as err:
            raise UIError(str(err)) from None
        return pipe

    # ------------------------------------------------------------------------------------------- generate

    def generate(
        self, settings: dict[str, Any], progress: Callable[[int, int], None] | None = None
    ) -> dict[str, str]:
        """Run one generation from the page's settings; returns the written files."""
        from ..pipeline.predict import save_outputs

        s = settings
        rule = self.shape_rule(s["base_model"])
        self.validate(s["width"], s["height"], s["frames"], s["steps"], s["guidance"], rule)
        if not (s.get("prompt") or "").strip():
            raise UIError("write a prompt first")
        with self._lock:
            pipe = self.pipeline(
                s["base_model"], s["motion_module"], s["lora"], s["lora_weight"], s["sampler"]
            )
            extra: dict[str, Any] = {}
            if s["mode"] == "i2v":
                if s.get("start_image") is None and s.get("end_image") is None:
                    raise UIError("upload a start image (and optionally an end image)")
                extra = {
                    "start_image": s.get("start_image"),
                    "end_image": s.get("end_image"),
                    "resize_to_start_image": bool(s.get("resize_to_start_image")),
                }
            elif s["mode"] == "v2v":
                if not s.get("video"):
                    raise UIError("upload a video first")
                extra = {"video": s["video"], "strength": float(s["strength"])}
            steps = int(s["steps"])
            if (s.get("stage_steps") or "").strip():
                try:
                    extra["stage_steps"] = step_list(s["stage_steps"].strip())
                except argparse.ArgumentTypeError as err:
                    raise UIError(f"stage steps: {err}") from None
                steps = sum(extra["stage_steps"])  # what the progress bar counts
            total = int(s.get("total_frames") or 0)
            try:
                check_fits(pipe, int(s["height"]), int(s["width"]), int(s["frames"]), self.memory_mode,
                           pipe._execution_device, cfg=float(s["guidance"]) > 1)  # fmt: skip
            except ValueError as err:
                raise UIError(str(err).replace(", or pass --skip-memory-check", "")) from None
            start = time.perf_counter()

            def on_step(_pipe, i, _t, kw):
                if time.perf_counter() - start > self.max_seconds:
                    raise UIError(
                        f"stopped after step {i + 1}: past this server's limit of {self.max_seconds:g} s"
                    )
                if progress and total <= int(s["frames"]):
                    progress(i + 1, steps)
                return kw

            kwargs = dict(
                negative_prompt=s.get("negative_prompt") or "",
                height=int(s["height"]),
                width=int(s["width"]),
                num_inference_steps=steps,
                guidance_scale=float(s["guidance"]),
                generator=torch.Generator().manual_seed(int(s["seed"])),
                callback_on_step_end=on_step,
                **extra,
            )
            try:
                if total > int(s["frames"]):  # a long video: segments of `frames`, each continuing the last
                    frames = self._long_video(pipe, s, total, kwargs, progress)
                else:
                    frames = pipe(
                        s["prompt"], num_frames=int(s["frames"]), output_type="np", **kwargs
                    ).frames[0]
            except (ValueError, FileNotFoundError) as err:
                raise UIError(str(err)) from None
        record = {k: v for k, v in s.items() if isinstance(v, (str, int, float, bool)) or v is None}
        record["frames_written"] = int(np.asarray(frames).shape[0])
        record["seconds"] = round(time.perf_counter() - start, 3)
        return save_outputs(
            np.asarray(frames), record, self.output_dir, int(s["fps"]), gif=False, unguessable=True
        )

    def _long_video(self, pipe, s: dict[str, Any], total: int, kwargs: dict, progress) -> np.ndarray:
        from ..pipeline.long_video import generate_long_video, segment_count

        overlap = int(s.get("overlap") or 0)
        if total > self.max_frames:
            raise UIError(f"{total} total frames is above this server's limit of {self.max_frames}")
        if progress:
            progress(0, segment_count(total, int(s["frames"]), overlap))
        video = generate_long_video(
            pipe, s["prompt"], total, num_frames=int(s["frames"]), overlap=overlap, **kwargs
        )
        return video[0].permute(1, 2, 3, 0).numpy()
