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
    "width", "height", "frames", "fps", "negative_prompt",
]  # fmt: skip


def build_app(controller: Controller, default_size: int = 256, default_frames: int = 17) -> gr.Blocks:
    bases = controller.base_models()
    rule = controller.shape_rule(bases[0]) if bases else ShapeRule()  # the labels show the first model's rule
    with gr.Blocks(title="EasyAnimate") as demo:
        gr.Markdown("# EasyAnimate\nGenerate videos from text, images or videos.")
        with gr.Row():
            base = gr.Dropdown(bases, value=bases[0] if bases else None, label="Base model")
            motion = gr.Dropdown(controller.motion_modules(), value="none", label="Motion module")
            lora = gr.Dropdown(controller.loras(), value="none", label="LoRA")
            lora_weight = gr.Slider(0, 2, value=0.55, step=0.05, label="LoRA weight")
        with gr.Row():
            sampler = gr.Dropdown(list(SAMPLERS), value="DPM++", label="Sampler")
            steps = gr.Slider(1, 100, value=25, step=1, label="Steps")
            guidance = gr.Slider(0, 20, value=6.0, step=0.5, label="Guidance")
            seed = gr.Number(value=43, precision=0, label="Seed")
            dice = gr.Button("Random seed", size="sm")
        with gr.Row():
            size_info = f"a multiple of {rule.size_multiple} for {bases[0] if bases else 'this model'}"
            width = gr.Number(value=default_size, precision=0, label="Width", info=size_info)
            height = gr.Number(value=default_size, precision=0, label="Height", info=size_info)
            frames = gr.Number(value=default_frames, precision=0, label=f"Frames ({rule.frames_text})")
            fps = gr.Number(value=8, precision=0, label="FPS")
        negative = gr.Textbox(label="Negative prompt", value="")
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
        ]
        dice.click(lambda: random.randint(0, 2**31 - 1), outputs=seed, api_name=False)

        with gr.Tab("Text-to-Video"):
            t2v_prompt = gr.Textbox(label="Prompt", lines=2, elem_id="t2v-prompt")
            t2v_go = gr.Button("Generate", variant="primary", elem_id="t2v-generate")
        with gr.Tab("Image-to-Video"):
            i2v_prompt = gr.Textbox(label="Prompt", lines=2)
            with gr.Row():
                start = gr.Image(type="numpy", label="Start image")
                end = gr.Image(type="numpy", label="End image (optional)")
            resize = gr.Checkbox(label="Resize to the start image", value=False)
            i2v_go = gr.Button("Generate", variant="primary")
        with gr.Tab("Video-to-Video"):
            v2v_prompt = gr.Textbox(label="Prompt", lines=2)
            source = gr.Video(label="Input video")
            strength = gr.Slider(0.05, 1.0, value=0.7, step=0.05, label="Strength")
            v2v_go = gr.Button("Generate", variant="primary")

        with gr.Row():
            result = gr.Video(label="Result", elem_id="result-video", autoplay=True)
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
            past = [*past, out["video"]]
            return out["video"], out["video"], record, past, past

        outputs = [result, path, settings, history, gallery]

        def t2v(prompt, *args, progress=gr.Progress()):
            *values, past = args
            return run("t2v", values, {"prompt": prompt}, past, progress)

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

        t2v_go.click(t2v, [t2v_prompt, *shared, history], outputs, api_name="t2v")
        i2v_go.click(i2v, [i2v_prompt, start, end, resize, *shared, history], outputs, api_name="i2v")
        v2v_go.click(v2v, [v2v_prompt, source, strength, *shared, history], outputs, api_name="v2v")
    demo.queue(default_concurrency_limit=1)  # a second click waits instead of running out of memory
    return demo
