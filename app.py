"""Web UI: text-, image- and video-to-video in the browser (gradio).

python app.py                       # http://127.0.0.1:7860, models from models/
python app.py --port 8000 --auth me:secret --model-root /data/models
"""

from __future__ import annotations

import argparse
import sys

from easyanimate.pipeline.predict import add_device_arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="gradio share link (off by default)")
    p.add_argument("--auth", default=None, help="user:password")
    p.add_argument("--model-root", default="models/", help="folder with Diffusion_Transformer/ etc.")
    p.add_argument("--output-dir", default="samples/easyanimate-videos")
    p.add_argument(
        "--default-size", type=int, default=None, help="initial width and height (default: the first model's)"
    )
    p.add_argument(
        "--default-frames",
        type=int,
        default=None,
        help="initial frame count (default: 17 or the nearest valid)",
    )
    p.add_argument(
        "--max-upload-mb", type=int, default=50, help="largest upload (uploads are deleted after an hour)"
    )
    p.add_argument(
        "--max-seconds", type=float, default=900, help="a generation is stopped past this many seconds"
    )
    add_device_arguments(p)  # --gpu-memory-mode, --storage-dtype, --device as in predict_t2v.py
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    auth = None
    if args.auth:
        if ":" not in args.auth:
            print("error: --auth must be user:password", file=sys.stderr)
            return 2
        auth = tuple(args.auth.split(":", 1))
    from easyanimate.ui.app import build_app
    from easyanimate.ui.controller import Controller

    controller = Controller(
        args.model_root,
        args.output_dir,
        memory_mode=args.gpu_memory_mode,
        device=args.device,
        storage_dtype=args.storage_dtype,
        max_seconds=args.max_seconds,
    )
    if not controller.base_models():
        print(f"note: no pipeline folders under {args.model_root}/Diffusion_Transformer yet", file=sys.stderr)
    demo = build_app(controller, args.default_size, args.default_frames)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=auth,
        max_file_size=f"{args.max_upload_mb}mb",
        allowed_paths=[controller.output_dir],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
