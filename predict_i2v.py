"""Image-to-video (first / last frame) and video-to-video generation from the command line.

Example (once the inference pipeline lands):
    python predict_i2v.py --start-image first.png --prompt "a red circle moving right"
"""

from __future__ import annotations

import sys

from easyanimate.utils.cli import not_implemented
from predict_t2v import build_parser as build_t2v_parser


def build_parser():
    p = build_t2v_parser()
    p.description = __doc__
    p.add_argument("--start-image", default=None, help="image the video starts from")
    p.add_argument("--end-image", default=None, help="image the video ends on")
    p.add_argument("--video", default=None, help="input video for video-to-video")
    p.add_argument(
        "--strength", type=float, default=0.7, help="video-to-video: how much of the input to re-noise"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return not_implemented("image-to-video and video-to-video inference", "pipeline issue #4")


if __name__ == "__main__":
    sys.exit(main())
