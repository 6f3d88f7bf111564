"""Spatial pyramid flow vs plain flow: transformer FLOPs, wall time and tokens for one video, same model.

One DiT (random weights, forward cost only) samples a video either with 25 plain flow steps at full size or
with the same 25 steps split over K pyramid stages (stage k at 1/2^k of the latent's height and width). Rows per
model size: FLOPs per video (counted by torch), wall time per video (the median forward at each stage size x
its steps), training tokens per step (a uniform stage draw against always full size). Sizes: the CPU demo
(6 blocks, width 128, 64 px, 17 frames) and EasyAnimate-XL/2 (28 blocks, width 1152, 512 px, 17 frames; its
FLOPs are counted on the meta device, its time measured at 256 px unless --xl-time-size says otherwise).
Goal: <= 0.5x FLOPs and time per video at 25 total steps.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median, print_table, time_interleaved, write_results  # noqa: E402

from easyanimate.diffusion.pyramid_sampler import split_steps  # noqa: E402
from easyanimate.diffusion.temporal_pyramid import TemporalPyramid  # noqa: E402
from easyanimate.models.frame_sequence import FrameCache  # noqa: E402
from easyanimate.models.presets import build_transformer  # noqa: E402
from easyanimate.pipeline.autoregressive import chunk_sizes  # noqa: E402

HISTORY = (1, 2, 4, 4)  # config/train_t2v_pyramid.yaml's autoregressive_history
SKEWED = [17, 8]  # config/demo/t2v_pyramid.yaml's pyramid_stage_steps: 2 stages, most steps at the coarse one
CPU_SDPA = {  # torch counts the CUDA SDPA kernels only; map the CPU one to the same formula
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, **kw: sdpa_flop_count(
        q, k, v
    )
}


def forward_inputs(model, latent: int, frames: int, text_len: int, device) -> tuple:
    c = model.config
    x = torch.randn(1, c.in_channels, frames, latent, latent, device=device)
    text = torch.randn(1, text_len, c.caption_channels, device=device)
    return x, torch.tensor([500.0], device=device), text, torch.ones(1, text_len, device=device)


def flops_at(model, latent: int, frames: int, text_len: int, device) -> int:
    x, t, text, mask = forward_inputs(model, latent, frames, text_len, device)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CPU_SDPA) as counter:
        model(x, t, text, encoder_attention_mask=mask)
    return counter.get_total_flops()


def times_at(model, sizes: list[int], frames: int, text_len: int, repeats: int) -> dict[int, float]:
    fns = {}
    for s in sizes:
        args = forward_inputs(model, s, frames, text_len, "cpu")

        def run(a=args):
            with torch.no_grad():
                model(a[0], a[1], a[2], encoder_attention_mask=a[3])

        fns[s] = run
    return {s: median(v) for s, v in time_interleaved(fns, repeats=repeats).items()}


def autoregressive_flops(model, full: int, frames: int, text_len: int, device, temporal: TemporalPyramid,
                         per_stage: list[int]) -> float:  # fmt: skip
    """FLOPs of one video generated frame by frame (or chunk by chunk) as the pipeline does it: each chunk's steps
    (split over the spatial stages), its compressed history run once per chunk (`FrameCache`), the present frames
    alone at every step."""
    c = model.config
    text = torch.randn(1, text_len, c.caption_channels, device=device)
    mask = torch.ones(1, text_len, device=device)
    stages = len(per_stage)
    total, done = 0, 0
    for size in chunk_sizes(temporal, 0, frames):
        past = temporal.compress([torch.randn(1, c.in_channels, full, full, device=device)] * done)
        cache = FrameCache()
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CPU_SDPA) as counter:
            for count, k in zip(per_stage, reversed(range(stages))):
                present = torch.randn(1, c.in_channels, size, full >> k, full >> k, device=device)
                if temporal.chunk == 1:
                    present = present[:, :, 0]
                for _ in range(count):
                    model([*past, present], torch.zeros(1, len(past) + size, device=device), text,
                          encoder_attention_mask=mask, frame_cache=cache)  # fmt: skip
        total += counter.get_total_flops()
        done += size
    return total


def compare(name: str, flops: dict[int, int], times: dict[int, float] | None, full: int, per_stage: list[int],
            frames: int, patch: int) -> dict:  # fmt: skip
    """One row: `per_stage` steps (coarsest first) against their total at full size."""
    stages, steps = len(per_stage), sum(per_stage)
    sizes = [full >> k for k in reversed(range(stages))]
    tokens = {s: frames * (s // patch) ** 2 for s in sizes}
    row = {
        "model": name,
        "stages": stages,
        "stage_steps": "+".join(map(str, per_stage)),
        "plain_tflops": steps * flops[full] / 1e12,
        "pyramid_tflops": sum(n * flops[s] for n, s in zip(per_stage, sizes)) / 1e12,
        "train_tokens_plain": tokens[full],
        "train_tokens_pyramid": sum(tokens.values()) / stages,
    }
    row["flops_ratio"] = row["pyramid_tflops"] / row["plain_tflops"]
    row["train_tokens_ratio"] = row["train_tokens_pyramid"] / row["train_tokens_plain"]
    if times:
        row["plain_s"] = steps * times[full]
        row["pyramid_s"] = sum(n * times[s] for n, s in zip(per_stage, sizes))
        row["time_ratio"] = row["pyramid_s"] / row["plain_s"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=25, help="total sampling steps, plain and pyramid alike")
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per size (demo)")
    p.add_argument(
        "--xl-time-size", type=int, default=256, help="pixels at which XL/2's wall time is measured"
    )
    p.add_argument("--quick", action="store_true", help="demo only, 2 repeats (a smoke run)")
    args = p.parse_args()
    torch.manual_seed(0)
    rows, raw = [], {}

    # the CPU demo: 6 blocks, width 128, 4x / 2x VAE at 64 px, 17 frames -> 9 latent frames of 16x16, 16 caption
    # tokens
    frames = 9
    demo = build_transformer("demo", motion_module_mode="vanilla").eval()
    sizes = [16, 8, 4]
    demo_flops = {s: flops_at(demo, s, frames, 16, "cpu") for s in sizes}
    demo_times = times_at(demo, sizes, frames, 16, 2 if args.quick else args.repeats)
    raw["demo"] = {"gflops_per_forward": {s: f / 1e9 for s, f in demo_flops.items()}, "seconds": demo_times}
    skewed = split_steps(args.steps, 2, SKEWED)
    splits = [split_steps(args.steps, 2), skewed, split_steps(args.steps, 3)]
    for per_stage in splits:
        rows.append(compare("demo (64 px)", demo_flops, demo_times, 16, per_stage, frames, 2))
    # the temporal pyramid: frame by frame, history [1, 2, 4, 4] (config/train_t2v_pyramid.yaml), causal modules;
    # chunk by chunk (config/demo/t2v_pyramid.yaml: chunks of 9 latent frames counting the history), at the
    # training length (9 latent frames: one chunk) and twice it (17: the plain model runs the whole clip)
    demo.set_autoregressive(list(HISTORY))
    long_flops = flops_at(demo, 16, 2 * frames - 1, 16, "cpu")
    for name, chunk, n, per_stage in (("frame by frame", 1, frames, [args.steps]),
                                      ("frame by frame", 1, frames, split_steps(args.steps, 3)),
                                      ("chunk by chunk", frames, frames, skewed),
                                      ("chunk by chunk, 2x length", frames, 2 * frames - 1, skewed)):  # fmt: skip
        ar = autoregressive_flops(demo, 16, n, 16, "cpu", TemporalPyramid(HISTORY, chunk), per_stage)
        plain = sum(per_stage) * (demo_flops[16] if n == frames else long_flops)
        rows.append({"model": f"demo, {name}", "stages": len(per_stage), "stage_steps": "+".join(map(str, per_stage)),
                     "plain_tflops": plain / 1e12, "pyramid_tflops": ar / 1e12, "flops_ratio": ar / plain})  # fmt: skip
    frames = 5  # XL/2: 17 frames through the 4x temporal VAE

    if not args.quick:
        # XL/2 at 512 px (8x VAE: 64x64 latents), 120 T5 tokens: FLOPs on the meta device
        with torch.device("meta"):
            xl = build_transformer("EasyAnimate-XL/2", sample_size=64, motion_module_mode="vanilla").eval()
        sizes = [64, 32, 16]
        xl_flops = {s: flops_at(xl, s, frames, 120, "meta") for s in sizes}
        del xl
        # wall time at --xl-time-size (CPU: 512 px forwards take minutes)
        xl = build_transformer("EasyAnimate-XL/2", sample_size=64, motion_module_mode="vanilla").eval()
        full = args.xl_time_size // 8
        xl_times = times_at(xl, [full, full // 2, full // 4], frames, 120, 1)
        raw["xl"] = {"gflops_per_forward": {s: f / 1e9 for s, f in xl_flops.items()}, "seconds": xl_times}
        for per_stage in splits:
            rows.append(compare("XL/2 (512 px)", xl_flops, None, 64, per_stage, frames, 2))
            time_flops = (
                {s: flops_at(xl, s, frames, 120, "cpu") for s in xl_times} if len(per_stage) == 3 else None
            )
            if time_flops:
                raw["xl"]["gflops_at_time_size"] = {s: f / 1e9 for s, f in time_flops.items()}
            r = compare(f"XL/2 ({args.xl_time_size} px)", time_flops or {s: 1 for s in xl_times}, xl_times,
                        full, per_stage, frames, 2)  # fmt: skip
            if not time_flops:
                for key in ("plain_tflops", "pyramid_tflops", "flops_ratio"):
                    r.pop(key)
            rows.append(r)

    columns = ["model", "stages", "stage_steps", "flops_ratio", "time_ratio", "train_tokens_ratio",
               "plain_tflops", "pyramid_tflops", "plain_s", "pyramid_s"]  # fmt: skip
    print(
        f"\n{args.steps} steps per video, 17 frames (demo: 9 latent frames, XL/2: 5), transformer forward only, no CFG"
    )
    print_table(rows, columns)
    path = write_results(
        "bench_pyramid" + ("_quick" if args.quick else ""),
        {
            "steps": args.steps,
            "rows": rows,
            "raw": raw,
            "goal": "flops_ratio and time_ratio <= 0.5 at 25 steps",
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
