"""Copy a model folder (or one .safetensors file) with its float32 tensors stored as float16.

Halves the size of what we commit or ship; loading with `dtype=torch.float32` (what the CLIs do on CPU)
casts back. Other files (configs, tokenizers) are copied unchanged. The destination is replaced atomically.
"""

from __future__ import annotations

import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from .replace import write_replacing


def convert_file(src: str, dst: str) -> tuple[int, int]:
    """One safetensors file; returns (bytes before, bytes after)."""
    tensors = load_file(src)
    half = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
    save_file({k: v.contiguous() for k, v in half.items()}, dst, metadata={"format": "pt"})
    return os.path.getsize(src), os.path.getsize(dst)


def convert_fp16(src: str, dst: str) -> tuple[int, int]:
    """A folder or a file; returns (bytes before, bytes after) of the safetensors converted."""
    if os.path.isfile(src):
        return write_replacing(dst, lambda tmp: convert_file(src, tmp))
    return write_replacing(dst, lambda tmp: _convert_folder(src, tmp))


def _convert_folder(src: str, out: str) -> tuple[int, int]:
    before = after = 0
    for root, _, files in os.walk(src):
        out_root = os.path.join(out, os.path.relpath(root, src))
        os.makedirs(out_root, exist_ok=True)
        for name in files:
            if name.endswith(".safetensors"):
                b, a = convert_file(os.path.join(root, name), os.path.join(out_root, name))
                before, after = before + b, after + a
            else:
                shutil.copy2(os.path.join(root, name), os.path.join(out_root, name))
    return before, after
