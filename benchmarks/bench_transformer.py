"""Video DiT overhead vs diffusers PixArt, same weights and inputs.

Default: EasyAnimate-S/2 width, 16 frames of 32x32 latents, 120 text tokens, fp32 on CPU (bf16 on a GPU).
Rows: diffusers PixArt with the frames as its batch (one call) and frame by frame (F calls); ours with
motion modules off (goal: <= 1.05x PixArt), with vanilla and hybrid motion modules (ratio and added FLOPs).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from diffusers import PixArtTransformer2DModel
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median, print_table, time_interleaved, write_results  # noqa: E402

from easyanimate.models import VideoTransformer3DModel  # noqa: E402

S2 = dict(num_layers=12, num_attention_heads=6, attention_head_dim=64, cross_attention_dim=384)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--latent-size", type=int, default=32)
    p.add_argument("--text-len", type=int, default=120)
    p.add_argument("--caption-channels", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="2 blocks, 4 frames, 2 repeats (smoke run)")
    args = p.parse_args()
    cfg = dict(S2)
    if args.quick:
        cfg["num_layers"], args.frames, args.repeats = 2, 4, 2

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    pixart = PixArtTransformer2DModel(
        **cfg,
        in_channels=4,
        out_channels=8,
        sample_size=args.latent_size,
        caption_channels=args.caption_channels,
    )
    pixart = pixart.to(device).eval()
    models = {
        mode: VideoTransformer3DModel.from_pixart(pixart, motion_module_mode=mode).to(device).eval()
        for mode in ("none", "vanilla", "hybrid")
    }
    if dtype != torch.float32:
        pixart = pixart.to(dtype)
        models = {k: m.to(dtype) for k, m in models.items()}

    f, s = args.frames, args.latent_size
    x = torch.randn(1, 4, f, s, s, device=device, dtype=dtype)
    t = torch.tensor([500], device=device)
    text = torch.randn(1, args.text_len, args.caption_channels, device=device, dtype=dtype)
    mask = torch.ones(1, args.text_len, device=device)
    frames = x[0].permute(1, 0, 2, 3).contiguous()  # (F, C, H, W): frames as PixArt's batch
    text_f, mask_f, t_f = text.expand(f, -1, -1), mask.expand(f, -1), t.expand(f)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def run(fn):
        def timed():
            with torch.no_grad():
                fn()
            sync()

        return timed

    fns = {
        "pixart (frames as batch)": run(
            lambda: pixart(frames, encoder_hidden_states=text_f, timestep=t_f, encoder_attention_mask=mask_f)
        ),
        "pixart (frame by frame)": run(
            lambda: [
                pixart(frames[i : i + 1], encoder_hidden_states=text, timestep=t, encoder_attention_mask=mask)
                for i in range(f)
            ]
        ),
    }
    for mode, model in models.items():
        fns[f"ours, motion {mode}"] = run(lambda m=model: m(x, t, text, encoder_attention_mask=mask))

    def flops(fn) -> int:
        # torch counts the CUDA SDPA kernels only; map the CPU one to the same formula
        cpu_sdpa = {
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, **kw: (
                sdpa_flop_count(q, k, v)
            )
        }
        with FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
            fn()
        return counter.get_total_flops()

    ref_flops = flops(fns["pixart (frames as batch)"])
    times = time_interleaved(fns, repeats=args.repeats)
    ref = median(times["pixart (frames as batch)"])
    rows = []
    for name, fn in fns.items():
        med = median(times[name])
        fl = flops(fn)
        rows.append(
            {
                "run": name,
                "median_s": med,
                "ratio_vs_pixart_batch": med / ref,
                "gflops": fl / 1e9,
                "flops_added_pct": 100.0 * (fl - ref_flops) / ref_flops,
            }
        )
    print(
        f"\nEasyAnimate-S/2 width, {f} frames x {s}x{s} latents, {args.text_len} text tokens, {dtype}, {device}"
    )
    print_table(rows, ["run", "median_s", "ratio_vs_pixart_batch", "gflops", "flops_added_pct"])
    path = write_results(
        "bench_transformer" + ("_quick" if args.quick else ""),
        {
            "config": {**cfg, "frames": f, "latent_size": s, "text_len": args.text_len, "dtype": str(dtype)},
            "repeats": args.repeats,
            "rows": rows,
            "raw_times_s": times,
            "goal": "ours with motion off <= 1.05 x pixart (frames as batch)",
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
