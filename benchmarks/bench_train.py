"""DiT training throughput and memory, with and without gradient checkpointing.

CPU: an S/2-width DiT (12 blocks, width 384, motion modules after every block), batch 1 of 17 frames at
256x256 (5 x 32x32 latents = 1,280 tokens), fp32, AdamW, the epsilon objective. Each setting runs in a fresh
process; peak memory = peak RSS minus RSS before the first step. On a GPU machine (none was lent to the
sessions that built this) `--gpu` runs XL/2 at 256x256x49 and 512x512x49 in bf16 with checkpointing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import current_rss  # noqa: E402


def worker(args) -> None:
    import torch

    from easyanimate.diffusion.objectives import Objective
    from easyanimate.models import build_transformer

    torch.manual_seed(0)
    device = "cuda" if args.gpu else "cpu"
    model = build_transformer(args.preset, caption_channels=64, sample_size=args.latent).to(device).train()
    if args.checkpointing:
        model.enable_gradient_checkpointing()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    objective = Objective("epsilon")
    frames = 1 + (args.frames - 1) // 4
    x0 = torch.randn(args.batch, 4, frames, args.latent, args.latent, device=device)
    text = torch.randn(args.batch, 120, 64, device=device)
    dtype = torch.bfloat16 if args.gpu else torch.float32

    def step(i):
        g = torch.Generator(device=device).manual_seed(i)
        noised = objective.noise(x0, torch.randn(x0.shape, generator=g, device=device), g)
        with torch.autocast(device, dtype=dtype, enabled=args.gpu):
            pred = model(noised.model_input, noised.timesteps, text).sample
            loss = objective.loss(pred[:, :4], noised)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    base = current_rss()
    if args.gpu:
        torch.cuda.reset_peak_memory_stats()
    step(0)  # warm-up (allocates optimizer state)
    if args.gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(1, args.steps + 1):
        step(i)
    if args.gpu:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    peak = (
        torch.cuda.max_memory_allocated()
        if args.gpu
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    )
    tokens = args.batch * frames * (args.latent // 2) ** 2
    print(
        json.dumps(
            {
                "s_per_step": seconds,
                "samples_per_s": args.batch / seconds,
                "tokens_per_s": tokens / seconds,
                "peak_mb": peak / 2**20,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="EasyAnimate-S/2")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    from common import print_table, write_results

    settings = [(args.preset, args.frames, args.latent, False), (args.preset, args.frames, args.latent, True)]
    if args.quick:
        settings = [("tiny", 9, 16, False), ("tiny", 9, 16, True)]
    if args.gpu:
        settings = [("EasyAnimate-XL/2", 49, 32, True), ("EasyAnimate-XL/2", 49, 64, True)]
    rows = []
    for preset, frames, latent, ckpt in settings:
        cmd = [sys.executable, __file__, "--worker", "--preset", preset, "--frames", str(frames)]
        cmd += ["--latent", str(latent), "--batch", str(args.batch), "--steps", str(args.steps)]
        cmd += ["--checkpointing"] * ckpt + ["--gpu"] * args.gpu
        res = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        )
        rows.append({"preset": preset, "frames": frames, "size": latent * 8, "checkpointing": ckpt, **res})
        print(rows[-1], flush=True)
    if not args.gpu:
        rows[1]["memory_saved_pct"] = 100 * (1 - rows[1]["peak_mb"] / rows[0]["peak_mb"])
        rows[1]["slowdown"] = rows[1]["s_per_step"] / rows[0]["s_per_step"]
    print()
    print_table(
        rows,
        [
            "preset",
            "frames",
            "size",
            "checkpointing",
            "s_per_step",
            "samples_per_s",
            "tokens_per_s",
            "peak_mb",
            "memory_saved_pct",
            "slowdown",
        ],
    )
    path = write_results(
        "bench_train" + ("_quick" if args.quick else "") + ("_gpu" if args.gpu else ""), {"rows": rows}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
