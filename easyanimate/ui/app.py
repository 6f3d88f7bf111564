"""The gradio page: Text-to-Video, Image-to-Video and Video-to-Video tabs over shared controls.

Each tab's button is also a gradio API endpoint (`/t2v`, `/i2v`, `/v2v`); see the README for a gradio_client
example. Generations queue one at a time; errors appear in the page.
"""

from __future__ import annotations

import random
from typing import Any

import gradio as gr

from ..diffusion.samplers import SAMPLERS
from ..models.shape_rule import ShapeRule
from .controller import Controller, UIError

SHARED = [
    "base_model", "motion_module", "lora", "lora_weight", "sampler", "steps", "guidance", "seed",
    "width", "height", "frames", "fps", "negative_prompt", "stage_steps",
]  # fmt: skip
DEFAULT_PROMPT = "a red circle moving right on a gray background"
DEFAULT_NEGATIVE = "blurry, distorted, low quality"


def _labels(base: str | None, rule: ShapeRule) -> tuple[str, str]:
    return f"a multiple of {rule.size_multiple} for {base or 'this model'}", f"Frames ({rule.frames_text})"


UPLOAD_CACHE_CLEANUP = (600, 3600)  # (every seconds, older than seconds)


def build_app(
    controller: Controller, default_size: int | None = None, default_frames: int | None = None
) -> gr.Blocks:
    """The page. Sampler, size and frames start at the first model's own (read from its configs; the
    arguments override size and frames) and follow the chosen base model."""
    bases = controller.base_models()
    first = controller.defaults(bases[0]) if bases else None
    rule = first["rule"] if first else ShapeRule()
    size = default_size or (first["size"] if first else 256)
    frame_count = default_frames or (first["frames"] if first else 17)
    size_info, frames_label = _labels(bases[0] if bases else None, rule)
    # uploads and served results live in gradio's cache: files older than an hour go, checked every 10 minutes
    with gr.Blocks(title="EasyAnimate", delete_cache=UPLOAD_CACHE_CLEANUP) as demo:
        gr.Markdown("# EasyAnimate\nGenerate videos from text, images or videos.")
        with gr.Row():
            base = gr.Dropdown(bases, value=bases[0] if bases else None, label="Base model")
            motion = gr.Dropdown(controller.motion_modules(), value="none", label="Motion module")
            lora = gr.Dropdown(controller.loras(), value="none", label="LoRA")
            lora_weight = gr.Slider(0, 2, value=0.55, step=0.05, label="LoRA weight")
            refresh = gr.Button("Refresh model lists", size="sm", elem_id="refresh-models")
        with gr.Row():
            sampler = gr.Dropdown(
                first["samplers"] if first else list(SAMPLERS),
                value=first["sampler"] if first else "DPM++",
                label="Sampler",
                info="the samplers that fit the base model's training objective",
            )
            steps = gr.Slider(1, 100, value=25, step=1, label="Steps")
            guidance = gr.Slider(0, 20, value=6.0, step=0.5, label="Guidance")
            seed = gr.Number(value=43, precision=0, label="Seed")
            dice = gr.Button("Random seed", size="sm")
        with gr.Row():
            width = gr.Number(value=size, precision=0, label="Width", info=size_info)
            height = gr.Number(value=size, precision=0, label="Height", info=size_info)
            frames = gr.Number(value=frame_count, precision=0, label=frames_label, info="1 makes an image")
            fps = gr.Number(value=8, precision=0, label="FPS")
        with gr.Row():
            negative = gr.Textbox(label="Negative prompt", value=DEFAULT_NEGATIVE, scale=3)
            stage_steps = gr.Textbox(
                label="Pyramid stage steps",
                value="",
                info="spatial-pyramid models: steps per stage, coarsest first (e.g. 10,8,7); empty: Steps split",
            )
        shared = [
            base,
            motion,
            lora,
            lora_weight,
            sampler,
            steps,
            guidance,
            seed,
            width,
            height,
            frames,
            fps,
            negative,
            stage_steps,
        ]
        dice.click(lambda: random.randint(0, 2**31 - 1), outputs=seed, api_name=False)

        def lists(chosen):
            names = controller.base_models()
            value = chosen if chosen in names else (names[0] if names else None)
            return (
                gr.update(choices=names, value=value),
                gr.update(choices=controller.motion_modules()),
                gr.update(choices=controller.loras()),
            )

        def follow(chosen, current_sampler):
            """A newly chosen base model brings its samplers, size rule and frame rule."""
            if not chosen:
                return gr.update(), gr.update(), gr.update(), gr.update()
            d = controller.defaults(chosen)
            info, label = _labels(chosen, d["rule"])
            keep = current_sampler if current_sampler in d["samplers"] else d["sampler"]
            return (
                gr.update(choices=d["samplers"], value=keep),
                gr.update(info=info),
                gr.update(info=info),
                gr.update(label=label),
            )

        refresh.click(lists, [base], [base, motion, lora], api_name=False)
        base.change(follow, [base, sampler], [sampler, width, height, frames], api_name=False)

        with gr.Tab("Text-to-Video"):
            t2v_prompt = gr.Textbox(label="Prompt", lines=2, value=DEFAULT_PROMPT, elem_id="t2v-prompt")
            with gr.Accordion("Long video", open=False):
                overlap_default = rule.nearest(1 + rule.temporal_ratio)[1]
                total_frames = gr.Number(
                    value=0,
                    precision=0,
                    label="Total frames",
                    info="more than Frames: segments, each continuing the last (0: one segment)",
                )
                overlap = gr.Number(
                    value=overlap_default,
                    precision=0,
                    label="Overlap",
                    info=f"frames shared by consecutive segments ({rule.frames_text})",
                )
            t2v_go = gr.Button("Generate", variant="primary", elem_id="t2v-generate")
        with gr.Tab("Image-to-Video"):
            i2v_prompt = gr.Textbox(label="Prompt", lines=2, value=DEFAULT_PROMPT)
            with gr.Row():
                start = gr.Image(type="numpy", label="Start image")
                end = gr.Image(type="numpy", label="End image (optional)")
            resize = gr.Checkbox(label="Resize to the start image", value=False)
            i2v_go = gr.Button("Generate", variant="primary")
        with gr.Tab("Video-to-Video"):
            v2v_prompt = gr.Textbox(label="Prompt", lines=2, value=DEFAULT_PROMPT)
            source = gr.Video(label="Input video")
            strength = gr.Slider(0.05, 1.0, value=0.7, step=0.05, label="Strength")
            v2v_go = gr.Button("Generate", variant="primary")

        with gr.Row():
            result = gr.Video(label="Result", elem_id="result-video", autoplay=True)
            image = gr.Image(label="Result image", elem_id="result-image", visible=False, type="filepath")
            with gr.Column():
                path = gr.Textbox(label="Saved to", elem_id="result-path")
                settings = gr.JSON(label="Settings")
        gallery = gr.Gallery(label="This session", columns=4)
        history = gr.State([])

        def run(mode: str, values: list, extra: dict, past: list, progress=gr.Progress()):
            s: dict[str, Any] = dict(zip(SHARED, values), mode=mode, **extra)
            s["negative_prompt"] = s.get("negative_prompt") or ""
            try:
                out = controller.generate(s, progress=lambda i, n: progress(i / n, desc=f"step {i}/{n}"))
            except UIError as err:
                raise gr.Error(str(err)) from None
            import json

            with open(out["settings"]) as fh:
                record = json.load(fh)
            still = out.get("image")  # one frame: shown as an image (the mp4 is written too)
            past = [*past, still or out["video"]]
            return (
                gr.update(value=None if still else out["video"], visible=not still),
                gr.update(value=still, visible=bool(still)),
                still or out["video"],
                record,
                past,
                past,
            )

        outputs = [result, image, path, settings, history, gallery]

        def t2v(prompt, total, overlap_frames, *args, progress=gr.Progress()):
            *values, past = args
            extra = {"prompt": prompt, "total_frames": total, "overlap": overlap_frames}
            return run("t2v", values, extra, past, progress)

        def i2v(prompt, start_image, end_image, resize_to_start, *args, progress=gr.Progress()):
            *values, past = args
            extra = {
                "prompt": prompt,
                "start_image": start_image,
                "end_image": end_image,
                "resize_to_start_image": resize_to_start,
            }
            return run("i2v", values, extra, past, progress)

        def v2v(prompt, video, strength_value, *args, progress=gr.Progress()):
            *values, past = args
            return run(
                "v2v", values, {"prompt": prompt, "video": video, "strength": strength_value}, past, progress
            )

        t2v_go.click(t2v, [t2v_prompt, total_frames, overlap, *shared, history], outputs, api_name="t2v")
        i2v_go.click(i2v, [i2v_prompt, start, end, resize, *shared, history], outputs, api_name="i2v")
        v2v_go.click(v2v, [v2v_prompt, source, strength, *shared, history], outputs, api_name="v2v")
    demo.queue(default_concurrency_limit=1)  # a second click waits instead of running out of memory
    return demo
