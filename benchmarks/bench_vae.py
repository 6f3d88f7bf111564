"""Slice VAE decoding: peak memory and time vs video length, with and without temporal slicing.

Each measurement runs in a fresh process: peak memory = peak RSS during `decode` minus RSS just before it,
minus the output tensor itself (which must exist whatever the method). "sliced" decodes
`--slice-latents` latent frames per call through the causal cache; "unsliced" decodes all latent frames
after the first in one call. Goal: peak(145) / peak(17) <= 1.5 with slicing.
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


def worker(args: argparse.Namespace) -> None:
    import torch

    from easyanimate.models.slice_vae import build_vae

    torch.manual_seed(0)
    vae = build_vae(args.preset).eval()
    latents = 1 + (args.frames[0] - 1) // 4
    z = torch.randn(1, vae.config.latent_channels, latents, args.size // 8, args.size // 8)
    vae.set_slicing(decode_latents=args.slice_latents if args.slice_latents > 0 else latents)
    base = current_rss()
    start = time.perf_counter()
    with torch.no_grad():
        out = vae.decode(z).sample
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    output_bytes = out.numel() * out.element_size()
    print(
        json.dumps(
            {"seconds": seconds, "peak_extra_bytes": peak - base - output_bytes, "output_bytes": output_bytes}
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="slice-4ch")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, nargs="+", default=[17, 49, 145])
    p.add_argument("--slice-latents", type=int, default=1, help="latent frames per decoder call when slicing")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="tiny preset, 64x64, 9/17/33 frames")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.preset, args.size, args.frames = "tiny", 64, [9, 17, 33]

    from common import print_table, write_results

    rows = []
    for mode, slice_latents in (("sliced", args.slice_latents), ("unsliced", 0)):
        for frames in args.frames:
            cmd = [sys.executable, __file__, "--worker", "--preset", args.preset, "--size", str(args.size)]
            cmd += ["--frames", str(frames), "--slice-latents", str(slice_latents)]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())
            rows.append(
                {
                    "mode": mode,
                    "frames": frames,
                    "seconds": res["seconds"],
                    "peak_extra_mb": res["peak_extra_bytes"] / 2**20,
                    "output_mb": res["output_bytes"] / 2**20,
                }
            )
            print(rows[-1], flush=True)
    for mode in ("sliced", "unsliced"):
        mine = [r for r in rows if r["mode"] == mode]
        for r in mine:
            r["peak_ratio_vs_shortest"] = r["peak_extra_mb"] / mine[0]["peak_extra_mb"]
    print(
        f"\n{args.preset} decode at {args.size}x{args.size}, CPU fp32, slice = {args.slice_latents} latent frame(s)"
    )
    print_table(rows, ["mode", "frames", "seconds", "peak_extra_mb", "output_mb", "peak_ratio_vs_shortest"])
    path = write_results(
        "bench_vae" + ("_quick" if args.quick else ""),
        {
            "config": {"preset": args.preset, "size": args.size, "slice_latents": args.slice_latents},
            "rows": rows,
            "goal": "sliced peak(145)/peak(17) <= 1.5, output tensor excluded",
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
