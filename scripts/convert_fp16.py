"""Copy a model folder (or one .safetensors file) with its float32 tensors stored as float16.

    python scripts/convert_fp16.py outputs/demo/t2v/pipeline models/Diffusion_Transformer/EasyAnimate-demo

Halves the size of what we commit or ship; loading with `dtype=torch.float32` (what the CLIs do on CPU)
casts back. Other files (configs, tokenizers) are copied unchanged. The destination is replaced atomically.
"""

from __future__ import annotations

import argparse
import os
import sys

from easyanimate.models.fp16 import convert_fp16


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="a model folder or a .safetensors file")
    p.add_argument("dst")
    a = p.parse_args(argv)
    if not os.path.exists(a.src):
        print(f"not found: {a.src}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(a.dst)), exist_ok=True)
    before, after = convert_fp16(a.src, a.dst)
    print(f"{a.dst}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
