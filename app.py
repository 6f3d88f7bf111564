"""Web UI for text-, image- and video-to-video generation (gradio)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="gradio share link (off by default)")
    p.add_argument("--auth", default=None, help="user:password")
    p.add_argument("--model-root", default="models/", help="folder with Diffusion_Transformer/ etc.")
    return p


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print("not implemented yet: the web UI (web UI issue #8). Nothing was started.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
