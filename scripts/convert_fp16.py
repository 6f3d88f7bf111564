"""Copy a model folder (or one .safetensors file) with its float32 tensors stored as float16.

    python scripts/convert_fp16.py outputs/demo/t2v/pipeline models/Diffusion_Transformer/EasyAnimate-demo

Halves the size of what we commit or ship; loading with `torch_dtype=torch.float32` (what the CLIs do on CPU)
casts back. Other files (configs, tokenizers) are copied unchanged. The destination is replaced atomically.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file


def convert_file(src: str, dst: str) -> tuple[int, int]:
    """Returns (bytes before, bytes after)."""
    tensors = load_file(src)
    half = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
    save_file({k: v.contiguous() for k, v in half.items()}, dst, metadata={"format": "pt"})
    return os.path.getsize(src), os.path.getsize(dst)


def convert(src: str, dst: str) -> tuple[int, int]:
    before = after = 0
    tmp = dst.rstrip("/") + ".tmp"
    if os.path.isfile(src):
        before, after = convert_file(src, tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        for root, _, files in os.walk(src):
            out_root = os.path.join(tmp, os.path.relpath(root, src))
            os.makedirs(out_root, exist_ok=True)
            for name in files:
                if name.endswith(".safetensors"):
                    b, a = convert_file(os.path.join(root, name), os.path.join(out_root, name))
                    before, after = before + b, after + a
                else:
                    shutil.copy2(os.path.join(root, name), os.path.join(out_root, name))
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    return before, after


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="a model folder or a .safetensors file")
    p.add_argument("dst")
    a = p.parse_args(argv)
    if not os.path.exists(a.src):
        print(f"not found: {a.src}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(a.dst)), exist_ok=True)
    before, after = convert(a.src, a.dst)
    print(f"{a.dst}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
