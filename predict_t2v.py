"""Text-to-video (and text-to-image with --num-frames 1) from the command line.

    python predict_t2v.py --prompt "a red circle moving right on a gray background" --steps 25
    python predict_t2v.py --prompt "..." --num-frames 17 --total-frames 61 --overlap 5   # long video

Writes <output-dir>/NNNN.mp4 and NNNN.json (every setting used).
"""

from __future__ import annotations

import argparse
import sys

from easyanimate.pipeline.predict import add_common_arguments, main_guarded, positive_int, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.add_argument(
        "--total-frames",
        type=positive_int,
        default=None,
        help="long video: generate segments up to this length",
    )
    p.add_argument(
        "--overlap",
        type=positive_int,
        default=5,
        help="long video: frames shared by consecutive segments (a count the model takes: 1 + 4j for ours)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return main_guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
