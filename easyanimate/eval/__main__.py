"""Evaluation from the command line.

    # a folder of generated videos (+ sidecar JSON with "prompt"), optionally against a reference folder
    python -m easyanimate.eval videos samples/ --shapes
    python -m easyanimate.eval videos recon/ --reference originals/ --encoder models/clip-vit --clip models/clip-vit

    # the demo model's evaluation (what scripts/train_demo.sh runs)
    python -m easyanimate.eval demo --model models/Diffusion_Transformer/EasyAnimate-demo --output outputs/eval

    # accuracy and direction sensitivity at every kept checkpoint of a t2v run (json + png)
    python -m easyanimate.eval curve --run outputs/demo/t2v --base outputs/demo/t2i/pipeline --output curve

    # can a training choice teach the direction word? the four-clip overfit probe (about a minute on CPU)
    python -m easyanimate.eval learnability --model models/Diffusion_Transformer/EasyAnimate-demo --shift 5

`videos` prints a summary and writes every number (per video too) to --output as JSON. FVD's statistics are
ours; its feature encoder is a local image model folder (CLIP / SigLIP / ViT; nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import sys


def _print_summary(results: dict, prefix: str = "") -> None:
    for key, value in results.items():
        if key == "per_video":
            continue
        if isinstance(value, dict):
            _print_summary(value, f"{prefix}{key}.")
        elif isinstance(value, float):
            print(f"{prefix}{key:<32s} {value:.4f}")
        else:
            print(f"{prefix}{key:<32s} {value}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m easyanimate.eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("videos", help="metrics over a folder of videos")
    v.add_argument("folder")
    v.add_argument(
        "--reference", help="folder of reference videos (PSNR/SSIM by file name; FVD with --encoder)"
    )
    v.add_argument("--encoder", help="local image encoder folder for FVD")
    v.add_argument("--clip", help="local CLIP folder for the CLIP score (needs sidecar prompts)")
    v.add_argument("--shapes", action="store_true", help="synthetic-shapes accuracy against sidecar prompts")
    v.add_argument("--output", help="write all results here as JSON")

    d = sub.add_parser("demo", help="evaluate the demo model (t2v accuracy, i2v first frame, LoRA, VAE)")
    d.add_argument("--model", default="models/Diffusion_Transformer/EasyAnimate-demo")
    d.add_argument("--inpaint-model", default=None, help="InP pipeline folder for the image-to-video check")
    d.add_argument("--lora", default=None, help="style LoRA (outlined shapes) to check")
    d.add_argument("--lora-weight", type=float, default=1.0)
    d.add_argument(
        "--train-metadata", default=None, help="training metadata: accuracy split by seen captions"
    )
    d.add_argument("--num-prompts", type=int, default=120)
    d.add_argument("--num-i2v", type=int, default=40)
    d.add_argument("--num-lora", type=int, default=30)
    d.add_argument(
        "--num-long",
        type=int,
        default=0,
        help="prompts generated at twice the length (33 frames: an autoregressive model continues past its clips)",
    )
    d.add_argument("--steps", type=int, default=25)
    d.add_argument("--guidance-scale", type=float, default=6.0)
    d.add_argument("--seed", type=int, default=10_000, help="first generation seed (training never uses it)")
    d.add_argument("--output", default="outputs/demo/eval")

    c = sub.add_parser("curve", help="score every checkpoint of a t2v run and plot the learning curve")
    c.add_argument("--run", required=True, help="the run's OUTPUT_DIR (its checkpoints/ are scored)")
    c.add_argument("--base", required=True, help="the pipeline the run started from (VAE, text encoder)")
    c.add_argument("--output", default="curve", help="folder for curve.json and curve.png")
    c.add_argument("--num-prompts", type=int, default=24, help="held-out prompts per checkpoint")
    c.add_argument("--num-clips", type=int, default=16, help="reference clips for caption sensitivity")

    lp = sub.add_parser(
        "learnability", help="four-clip overfit probe: does training teach the direction word?"
    )
    lp.add_argument("--model", default="models/Diffusion_Transformer/EasyAnimate-demo")
    lp.add_argument("--steps", type=int, default=120, help="fine-tuning steps on the four clips")
    lp.add_argument("--shift", type=float, default=5.0, help="flow shift of the training times")
    lp.add_argument("--time-sampling", default="logit_normal", help="logit_normal | uniform | high_noise")
    lp.add_argument("--seeds", type=int, default=1, help="generations per caption")
    lp.add_argument("--clips", type=int, default=4, help="4 x looks (colour, shape, background), up to 32")
    lp.add_argument(
        "--held-out", type=int, default=0, help="looks after the trained ones, never trained on, scored apart"
    )
    lp.add_argument("--output", default=None, help="write the results here as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "videos":
            from .folder import evaluate_folder

            results = evaluate_folder(args.folder, args.reference, args.encoder, args.clip, args.shapes)
            if args.output:
                with open(args.output, "w") as fh:
                    json.dump(results, fh, indent=2)
        elif args.command == "curve":
            from .curve import learning_curve

            rows = learning_curve(args.run, args.base, args.output, args.num_prompts, args.num_clips)
            results = {f"step {r['step']}": {k: v for k, v in r.items() if k != "step"} for r in rows}
        elif args.command == "learnability":
            from ..diffusion.objectives import Objective
            from ..pipeline.loading import load_pipeline
            from .learnability import direction_probe

            pipe = load_pipeline(args.model, device="cpu")
            pipe.set_progress_bar_config(disable=True)
            objective = Objective("flow", flow_shift=args.shift, time_sampling=args.time_sampling)
            results = direction_probe(
                pipe,
                args.steps,
                objective,
                seeds=tuple(range(args.seeds)),
                clips=args.clips,
                held_out=args.held_out,
            )
            if args.output:
                with open(args.output, "w") as fh:
                    json.dump(results, fh, indent=2)
        else:
            from .demo import evaluate_demo

            results = evaluate_demo(
                args.model,
                args.output,
                inpaint_model=args.inpaint_model,
                lora=args.lora,
                lora_weight=args.lora_weight,
                train_metadata=args.train_metadata,
                num_prompts=args.num_prompts,
                num_i2v=args.num_i2v,
                num_lora=args.num_lora,
                num_long=args.num_long,
                steps=args.steps,
                guidance_scale=args.guidance_scale,
                seed=args.seed,
            )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _print_summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
