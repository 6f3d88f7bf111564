"""Image-to-video (first and/or last frame) and video-to-video from the command line.

    python predict_i2v.py --start-image first.png --prompt "a red circle moving right"      # InP model
    python predict_i2v.py --start-image a.png --end-image b.png --prompt "..."               # InP model
    python predict_i2v.py --video input.mp4 --strength 0.7 --prompt "a blue square"         # any model

Writes <output-dir>/NNNN.mp4 and NNNN.json (every setting used).
"""

from __future__ import annotations

import argparse
import sys

from easyanimate.pipeline.predict import add_common_arguments, main_guarded, run, unit_float


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.add_argument("--start-image", default=None, help="image the video starts from")
    p.add_argument("--end-image", default=None, help="image the video ends on")
    p.add_argument(
        "--resize-to-start-image", action="store_true", help="take height/width from the start image"
    )
    p.add_argument(
        "--regenerate-start-frame",
        action="store_true",
        help="let the model redraw frame 0 instead of re-imposing the start image's latent",
    )
    p.add_argument("--video", default=None, help="input video for video-to-video")
    p.add_argument(
        "--strength", type=unit_float, default=0.7, help="video-to-video: how much of the input to re-noise"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.start_image or args.end_image or args.video):
        print(
            "error: give --start-image, --end-image or --video (text only: predict_t2v.py)", file=sys.stderr
        )
        return 2
    extra = dict(
        start_image=args.start_image,
        end_image=args.end_image,
        resize_to_start_image=args.resize_to_start_image,
        keep_start_latent=not args.regenerate_start_frame,
        video=args.video,
        strength=args.strength if args.video else 1.0,
    )
    return main_guarded(lambda: run(args, extra))


if __name__ == "__main__":
    sys.exit(main())
