"""Text-to-video generation from the command line.

Example (once the inference pipeline lands):
    python predict_t2v.py --prompt "a red circle moving right on a gray background" --steps 25
"""

from __future__ import annotations

import argparse
import sys

from easyanimate.utils.cli import not_implemented

DEFAULT_MODEL = "models/Diffusion_Transformer/EasyAnimate-demo"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="diffusers-style pipeline folder")
    p.add_argument("--prompt", required=True, help="what the video shows")
    p.add_argument("--negative-prompt", default="", help="what to steer away from (classifier-free guidance)")
    p.add_argument("--sampler", default="Euler", help="Euler, Euler A, DPM++, PNDM, DDIM, UniPC or Flow")
    p.add_argument("--steps", type=int, default=25, help="denoising steps")
    p.add_argument("--guidance-scale", type=float, default=6.0, help="CFG scale; <= 1 disables guidance")
    p.add_argument("--seed", type=int, default=43, help="random seed (same seed, same video)")
    p.add_argument("--height", type=int, default=None, help="pixels, multiple of 16 (default: the model's)")
    p.add_argument("--width", type=int, default=None, help="pixels, multiple of 16 (default: the model's)")
    p.add_argument("--num-frames", type=int, default=None, help="1 + 4k frames; 1 makes an image")
    p.add_argument("--fps", type=int, default=8, help="frames per second of the saved mp4")
    p.add_argument("--lora", default=None, help="LoRA safetensors (models/Personalized_Model/...)")
    p.add_argument("--lora-weight", type=float, default=0.55, help="LoRA strength")
    p.add_argument("--motion-module", default=None, help="motion module folder (models/Motion_Module/...)")
    p.add_argument(
        "--gpu-memory-mode",
        default="none",
        choices=["none", "model_cpu_offload", "sequential_cpu_offload", "model_cpu_offload_and_qfloat8"],
        help="trade speed for GPU memory",
    )
    p.add_argument("--output-dir", default="samples/easyanimate-videos", help="where mp4 + sidecar JSON go")
    p.add_argument("--gif", action="store_true", help="also write a GIF")
    return p


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return not_implemented(
        "text-to-video inference; no demo model yet", "pipeline issue #4, demo model issue #9"
    )


if __name__ == "__main__":
    sys.exit(main())
