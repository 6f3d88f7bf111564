"""The GPU check for training: bf16 steps/s, peak memory and MFU of a DiT preset, and one ZeRO-2 step.

    python benchmarks/gpu_check.py                       # on a GPU: XL/2, 256x256x17, gradient checkpointing
    python benchmarks/gpu_check.py --tiny --device cpu   # the same code at tiny size (what the tests run)

Random init, random latents and text features (the VAE and T5 are not part of a DiT step). Model FLOPs per step
are counted once with torch's FlopCounterMode (forward + backward, without the recomputation that gradient
checkpointing adds), MFU = FLOPs x steps/s / the device's peak bf16 rate (--peak-tflops). The ZeRO-2 part runs a few steps through accelerate + DeepSpeed in this one process.
Writes JSON (default benchmarks/results/gpu_check.json); sized to finish within 8 minutes on one H200.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from easyanimate.models import build_transformer  # noqa: E402


def _inputs(model, size: int, frames: int, vae_ratio: int, text_tokens: int, device, batch: int = 1):
    h = size // vae_ratio
    latent_frames = 1 + (frames - 1) // 4
    x = torch.randn(batch, model.config.in_channels, latent_frames, h, h, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    text = torch.randn(batch, text_tokens, model.config.caption_channels, device=device)
    return x, t, text


def _step(model, optimizer, inputs, dtype, device) -> float:
    x, t, text = inputs
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        out = model(x, t, text).sample
    loss = out.float().square().mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bf16_training(args, device) -> dict:
    torch.manual_seed(0)
    model = build_transformer(args.preset, **args.model_overrides).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = _inputs(model, args.size, args.frames, 8, 120, device)
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:  # model FLOPs (no recomputation counted); also the first, warm-up step
        _step(model, optimizer, inputs, torch.bfloat16, device)
    flops = counter.get_total_flops()
    model.enable_gradient_checkpointing()  # the timed steps recompute activations, as training does
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _step(model, optimizer, inputs, torch.bfloat16, device)
    _sync(device)
    start, steps = time.perf_counter(), 0
    while steps < args.steps and time.perf_counter() - start < args.seconds:
        _step(model, optimizer, inputs, torch.bfloat16, device)
        steps += 1
    _sync(device)
    seconds = time.perf_counter() - start
    rate = steps / seconds
    result = {
        "preset": args.preset,
        "shape": [args.frames, args.size, args.size],
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps_timed": steps,
        "steps_per_second": rate,
        "flops_per_step": flops,
        "achieved_tflops": flops * rate / 1e12,
        "mfu": flops * rate / (args.peak_tflops * 1e12),
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30
        if torch.device(device).type == "cuda"
        else None,
    }
    del model, optimizer
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zero2_step(args, device) -> dict:
    """A few ZeRO-2 steps in this process (world size 1) through accelerate, as the trainer prepares them."""
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return {"skipped": "deepspeed is not installed (pip install deepspeed==0.19.8)"}
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

    for key, value in {"MASTER_ADDR": "127.0.0.1", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    cpu = torch.device(device).type == "cpu"
    plugin = DeepSpeedPlugin(zero_stage=2, gradient_accumulation_steps=1, gradient_clipping=1.0)
    accelerator = Accelerator(
        mixed_precision="bf16",
        deepspeed_plugin=plugin,
        cpu=cpu,
        kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")] if cpu else [],
    )
    plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 1
    torch.manual_seed(0)
    model = build_transformer(args.preset, **args.model_overrides)
    model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    engine, optimizer = accelerator.prepare(model, optimizer)
    dtype = next(accelerator.unwrap_model(engine).parameters()).dtype
    x, t, text = _inputs(accelerator.unwrap_model(engine), args.size, args.frames, 8, 120, accelerator.device)
    losses = []
    if not cpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.zero_steps):
        out = engine(x.to(dtype), t, text.to(dtype)).sample
        loss = out.float().square().mean()
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    _sync(accelerator.device)
    return {
        "steps": args.zero_steps,
        "seconds_per_step": (time.perf_counter() - start) / args.zero_steps,
        "losses": losses,
        "weight_dtype": str(dtype),
        "peak_memory_gb": None if cpu else torch.cuda.max_memory_allocated() / 2**30,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="EasyAnimate-XL/2")
    p.add_argument("--size", type=int, default=256, help="pixels (latents are size / 8)")
    p.add_argument("--frames", type=int, default=17, help="video frames (1 + 4k)")
    p.add_argument("--steps", type=int, default=30, help="timed steps at most")
    p.add_argument("--seconds", type=float, default=180, help="time budget for the timed steps")
    p.add_argument("--zero-steps", type=int, default=3)
    p.add_argument(
        "--peak-tflops", type=float, default=989.0, help="the device's dense bf16 peak (H100/H200)"
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="the tiny preset at 32x32x5 (CPU test of this script)")
    p.add_argument("--skip-zero", action="store_true")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "gpu_check.json"))
    args = p.parse_args(argv)
    args.model_overrides = {}
    if args.tiny:
        args.preset, args.size, args.frames = "tiny", 32, 5
        args.steps, args.model_overrides = min(args.steps, 3), {"caption_channels": 32}
    result = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "bf16_training": bf16_training(args, args.device),
    }
    if not args.skip_zero:
        result["zero2"] = zero2_step(args, args.device)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh, indent=2)
    os.replace(tmp, args.out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
