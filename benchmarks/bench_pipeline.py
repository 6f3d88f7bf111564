"""Pipeline overhead per denoising step vs the transformer forward alone, and the memory estimator.

Overhead: an S/2-width DiT (random weights) with the tiny VAE and text encoder, 17 frames at 256x256 (5 x 32x32
latents), CFG on. Each denoising step of the pipeline is timed through its step callback; the transformer
forward alone runs on the same-shaped inputs (batch 2 for CFG), interleaved with the pipeline runs.
Goal: <= 5% overhead. Then the estimator's predicted peak GPU memory for EasyAnimate-XL/2 at 512x512x145.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, write_results  # noqa: E402

from easyanimate.data.synthetic import all_captions  # noqa: E402
from easyanimate.models import build_transformer, build_vae  # noqa: E402
from easyanimate.models.text_encoder import build_caption_tokenizer, build_tiny_t5_encoder  # noqa: E402
from easyanimate.pipeline import EasyAnimatePipeline, get_scheduler  # noqa: E402
from easyanimate.pipeline.memory import MEMORY_MODES, estimate_peak_memory  # noqa: E402


def overhead(args) -> dict:
    torch.manual_seed(0)
    tok = build_caption_tokenizer(all_captions(), 128)
    transformer = build_transformer(
        "EasyAnimate-S/2", caption_channels=32, sample_size=args.latent, num_layers=args.layers
    ).eval()
    pipe = EasyAnimatePipeline(
        vae=build_vae("tiny"),
        text_encoder=build_tiny_t5_encoder(tok),
        tokenizer=tok,
        transformer=transformer,
        scheduler=get_scheduler(args.sampler),
    )
    pipe.set_progress_bar_config(disable=True)
    size = args.latent * 8
    stamps: list[float] = []
    x = torch.randn(2, 4, 1 + (args.frames - 1) // 4, args.latent, args.latent)
    text, mask = torch.randn(2, 120, 32), torch.ones(2, 120)
    t = torch.tensor([500, 500])
    step_times, forward_times = [], []
    for _ in range(args.repeats):
        stamps.clear()
        start = time.perf_counter()
        pipe(
            "a red circle moving left",
            num_frames=args.frames,
            height=size,
            width=size,
            num_inference_steps=args.steps,
            guidance_scale=6.0,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
            callback_on_step_end=lambda _p, _i, _t, kw: stamps.append(time.perf_counter()) or kw,
        )
        edges = [start] + stamps
        step_times += [b - a for a, b in zip(edges[1:-1], edges[2:])]  # skip step 0 (holds text encoding)
        with torch.no_grad():
            for _ in range(args.steps - 1):
                s = time.perf_counter()
                transformer(x, t, text, encoder_attention_mask=mask)
                forward_times.append(time.perf_counter() - s)
    step, fwd = statistics.median(step_times), statistics.median(forward_times)
    return {
        "pipeline_step_s": step,
        "transformer_forward_s": fwd,
        "overhead_pct": 100 * (step - fwd) / fwd,
        "config": {"frames": args.frames, "size": size, "layers": args.layers, "sampler": args.sampler},
    }


def estimator_table() -> list[dict]:
    with torch.device("meta"):
        xl = build_transformer("EasyAnimate-XL/2")  # with vanilla motion modules after every block
        vae = build_vae("slice-4ch")
    params = sum(p.numel() for p in xl.parameters())
    vae_params = sum(p.numel() for p in vae.parameters())
    rows = []
    for mode in MEMORY_MODES:
        e = estimate_peak_memory(params, 512, 512, 145, mode, width_dim=1152, vae_params=vae_params)
        rows.append(
            {
                "mode": mode,
                "peak_gb": e.peak_gb,
                "t5_gb": e.text_encoder_gb,
                "dit_gb": e.transformer_gb,
                "dit_act_gb": e.transformer_activations_gb,
                "vae_decode_gb": e.vae_decode_gb,
                "fits_16gb": e.peak_gb <= 16,
                "fits_24gb": e.peak_gb <= 24,
            }
        )
    return rows, params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sampler", default="DPM++")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.layers, args.latent, args.frames, args.steps, args.repeats = 2, 16, 9, 4, 1
    res = overhead(args)
    print(f"\npipeline step vs transformer forward ({res['config']}, CFG on, CPU fp32)")
    print_table([res], ["pipeline_step_s", "transformer_forward_s", "overhead_pct"])
    rows, params = estimator_table()
    print(
        f"\nestimated peak GPU memory, EasyAnimate-XL/2 ({params / 1e9:.2f}B params with motion modules), 512x512x145, bf16"
    )
    print_table(
        rows, ["mode", "peak_gb", "t5_gb", "dit_gb", "dit_act_gb", "vae_decode_gb", "fits_16gb", "fits_24gb"]
    )
    path = write_results(
        "bench_pipeline" + ("_quick" if args.quick else ""),
        {"overhead": res, "estimator_xl2_512x512x145": rows, "xl2_params": params, "goal": "overhead <= 5%"},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
