"""Evaluation: the shapes analyzer on ground truth, prompt parsing, the Frechet distance behind FVD, temporal
consistency, the CLIP score, and `python -m easyanimate.eval` on folders of videos."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import make_tiny_clip, make_tiny_clip_vision, run_python

from easyanimate.data.synthetic import BACKGROUNDS, COLORS, generate
from easyanimate.data.video_io import read_frames, write_video
from easyanimate.eval.clip_score import CLIPScorer
from easyanimate.eval.consistency import temporal_consistency
from easyanimate.eval.fvd import ImageFeatureEncoder, feature_stats, frechet_distance, fvd
from easyanimate.eval.shapes import parse_prompt, read_video, score


def test_shapes_analyzer_reads_ground_truth(tmp_path):
    records = generate(str(tmp_path), num_videos=60, num_images=0, size=64, frames=17, seed=11)
    readings = [read_video(read_frames(os.path.join(tmp_path, r["file_path"]))) for r in records]
    exact = np.mean(
        [
            (x.color, x.shape, x.direction) == (r["color"], r["shape"], r["direction"])
            for x, r in zip(readings, records)
        ]
    )
    assert exact >= 0.98, exact  # measured on 150 clips at 64 px: 99.3%
    accuracy = score(readings, [r["text"] for r in records])
    assert accuracy["color_accuracy"] == 1.0 and accuracy["direction_accuracy"] == 1.0


def _blur(frames: np.ndarray) -> np.ndarray:
    """Two 3x3 box blurs: edges as soft as a VAE's reconstructions (rounded corners, blunted tips)."""
    x = frames.astype(float)
    for _ in range(2):
        p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        x = sum(p[:, dy : dy + x.shape[1], dx : dx + x.shape[2]] for dy in range(3) for dx in range(3)) / 9
    return x.round().astype(np.uint8)


def test_shapes_analyzer_reads_soft_edges_specks_and_edge_artifacts(tmp_path):
    # what a VAE does to a clip: the earlier fill-of-bounding-box reading took 15% of these for another shape
    records = generate(str(tmp_path), num_videos=40, num_images=20, size=64, frames=9, seed=12)
    wrong = []
    for r in records:
        frames = _blur(np.asarray(read_frames(os.path.join(tmp_path, r["file_path"]))).reshape(-1, 64, 64, 3))
        frames[:, 60:62, 2:4] = COLORS[r["color"]]  # a stray speck of the shape's colour in a corner
        frames[:, :, 0] = np.clip(frames[:, :, 0].astype(int) + 70, 0, 255)  # a bright edge column
        reading = read_video(frames)
        if reading.shape != r["shape"]:
            wrong.append((r["text"], reading.shape))
    assert not wrong, wrong
    # a circle is what neither the triangle nor the square test takes, so it must also be round: a lumpy blob
    # (two overlapping discs) is no shape, one disc is a circle
    yy, xx = np.mgrid[0:64, 0:64]
    frames = np.zeros((3, 64, 64, 3), np.uint8) + np.uint8(128)
    lumps = ((yy - 30) ** 2 + (xx - 26) ** 2 < 64) | ((yy - 36) ** 2 + (xx - 38) ** 2 < 64)
    frames[:, lumps] = COLORS["red"]
    lumpy = read_video(frames)
    assert lumpy.shape is None and lumpy.color == "red"
    frames[:] = 128
    frames[:, (yy - 30) ** 2 + (xx - 30) ** 2 < 81] = COLORS["red"]
    assert read_video(_blur(frames)).shape == "circle"


def test_shapes_analyzer_reads_the_colour_of_smeared_shapes():
    # a VAE that compresses frames in time smears a moving shape along its track: the smear blends the colour
    # with the background, lighter on white and darker on black; the foreground's median then read 7 of these
    # 54 as a neighbouring colour (red -> orange on white, orange -> red on black, blue -> purple on white)
    yy, xx = np.mgrid[0:64, 0:64]
    wrong = []
    for background, bg in BACKGROUNDS.items():
        for color, rgb in COLORS.items():
            for trail in (4, 8, 12):
                frames = []
                for t in range(5):
                    x0 = 12 + 8 * t
                    cover = np.mean(
                        [(yy - 30) ** 2 + (xx - x0 - s) ** 2 < 81 for s in range(0, trail + 1, 2)], axis=0
                    )[..., None]
                    frames.append(np.asarray(bg, float) * (1 - cover) + np.asarray(rgb, float) * cover)
                reading = read_video(np.stack(frames).round().astype(np.uint8))
                if reading.color != color:
                    wrong.append((background, color, trail, reading.color))
    assert not wrong, wrong


def test_parse_prompt():
    p = parse_prompt("A red circle moving left on a gray background")
    assert (p.color, p.shape, p.direction, p.background) == ("red", "circle", "left", "gray")
    assert parse_prompt("a blue square standing still on a white background").direction == "still"


def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 4))
    b = rng.normal(size=(4000, 4)) * 2.0 + 3.0  # N(3, 4I)
    assert fvd(a, a) == pytest.approx(0.0, abs=1e-8)
    # Gaussians N(m1, s1^2 I), N(m2, s2^2 I): |m1 - m2|^2 + d (s1 - s2)^2 = 4*9 + 4*1 = 40
    assert fvd(a, b) == pytest.approx(40.0, rel=0.05)
    assert fvd(a, a + 0.5) > fvd(a, a + 0.1) > 0
    mu, s = feature_stats(a)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError):
        feature_stats(np.zeros((1, 4)))


def test_fvd_with_a_local_encoder(tmp_path):
    encoder = ImageFeatureEncoder(make_tiny_clip_vision(tmp_path / "enc"))
    records = generate(str(tmp_path / "data"), num_videos=12, num_images=0, size=32, frames=5, seed=3)
    videos = [read_frames(os.path.join(tmp_path, "data", r["file_path"])) for r in records]
    feats = np.stack([encoder(v) for v in videos])
    shifted = np.stack([encoder(np.clip(v.astype(int) + 80, 0, 255).astype(np.uint8)) for v in videos])
    assert feats.shape == (12, 32)
    assert fvd(feats, feats) == pytest.approx(0.0, abs=1e-6)
    assert fvd(feats, shifted) > 1e-3


def test_shapes_analyzer_reads_the_outline_style(tmp_path):
    filled = generate(str(tmp_path / "f"), num_videos=12, num_images=0, size=64, frames=9, seed=4)
    outline = generate(
        str(tmp_path / "o"), num_videos=12, num_images=0, size=64, frames=9, seed=4, style="outline"
    )
    for folder, records, style in ((tmp_path / "f", filled, "filled"), (tmp_path / "o", outline, "outline")):
        readings = [read_video(read_frames(os.path.join(folder, r["file_path"]))) for r in records]
        assert [x.style for x in readings] == [style] * len(records)
        # outlines still read as their shape, colour and motion
        assert [(x.shape, x.color, x.direction) for x in readings] == [
            (r["shape"], r["color"], r["direction"]) for r in records
        ]


def test_temporal_consistency():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (1, 32, 32, 3), dtype=np.uint8)
    frozen = np.repeat(frame, 5, axis=0)
    flicker = rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    assert temporal_consistency(frozen) == pytest.approx(1.0, abs=1e-6)
    assert temporal_consistency(flicker) < 0.2
    # with per-frame features: cosine of consecutive frames
    feats = lambda v: v.reshape(len(v), -1).astype(float)  # noqa: E731
    assert temporal_consistency(frozen, feats) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        temporal_consistency(frozen[:1])


def test_clip_score_matches_the_model_logits(tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    folder = make_tiny_clip(tmp_path / "clip")
    scorer = CLIPScorer(folder)
    frames = np.random.default_rng(1).integers(0, 255, (3, 48, 48, 3), dtype=np.uint8)
    prompt = "a red circle"
    model, proc = CLIPModel.from_pretrained(folder), CLIPProcessor.from_pretrained(folder)
    with torch.no_grad():
        out = model(**proc(text=[prompt], images=list(frames), return_tensors="pt", padding=True))
        cosine = (out.logits_per_image[:, 0] / model.logit_scale.exp()).numpy()  # CLIP's own similarity
    assert scorer(frames, prompt) == pytest.approx(float(np.mean(100 * np.clip(cosine, 0, None))), rel=1e-4)


def _with_sidecars(folder, records):
    for r in records:
        stem = os.path.splitext(os.path.join(folder, r["file_path"]))[0]
        with open(stem + ".json", "w") as fh:
            json.dump({"prompt": r["text"]}, fh)


def test_eval_cli_on_folders(tmp_path):
    records = generate(str(tmp_path / "gen"), num_videos=10, num_images=0, size=64, frames=9, seed=2)
    _with_sidecars(tmp_path / "gen", records)
    videos = tmp_path / "gen" / "videos"
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    for r in records:  # a brighter copy of every video, same names
        frames = read_frames(os.path.join(tmp_path / "gen", r["file_path"]))
        write_video(
            str(shifted / os.path.basename(r["file_path"])),
            np.clip(frames.astype(int) + 60, 0, 255).astype(np.uint8),
        )
    encoder = make_tiny_clip_vision(tmp_path / "enc")
    clip = make_tiny_clip(tmp_path / "clip")

    def evaluate(reference):
        out = tmp_path / "results.json"
        res = run_python(
            *["-m", "easyanimate.eval", "videos", str(videos), "--reference", str(reference)],
            *["--encoder", encoder, "--clip", clip, "--shapes", "--output", str(out)],
        )
        assert res.returncode == 0, res.stderr
        assert "shapes.color_accuracy" in res.stdout
        return json.loads(out.read_text())

    same = evaluate(videos)
    assert same["videos"] == 10 and same["shapes"]["color_accuracy"] == 1.0
    assert same["shapes"]["direction_accuracy"] == 1.0
    assert same["reconstruction"]["psnr"] == float("inf") and same["reconstruction"]["pairs"] == 10
    assert same["fvd"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < same["clip_score"] <= 100 and 0.5 < same["temporal_consistency"] < 1.0
    other = evaluate(shifted)
    assert other["fvd"] > 1e-3 and other["reconstruction"]["psnr"] < 30


def test_eval_cli_reports_a_missing_folder():
    res = run_python("-m", "easyanimate.eval", "videos", "/nonexistent/folder")
    assert res.returncode == 2 and "not a folder" in res.stderr and "Traceback" not in res.stderr


def test_swap_word():
    from easyanimate.eval.sensitivity import SWAPS, swap_word

    caption = "A Red circle moving left on a gray background"
    assert swap_word(caption, SWAPS["direction"]) == "A Red circle moving right on a gray background"
    assert swap_word(caption, SWAPS["color"]) == "A green circle moving left on a gray background"
    assert swap_word("a red circle standing still on a gray background", SWAPS["direction"]) is None


@pytest.mark.parametrize(
    "sampler,prediction_type", [("Flow", "flow"), ("DDIM", "epsilon"), ("DDIM", "v_prediction")]
)
def test_caption_sensitivity_is_zero_exactly_when_the_model_ignores_text(tmp_path, sampler, prediction_type):
    from conftest import make_pipeline

    from easyanimate.eval.sensitivity import caption_sensitivity
    from easyanimate.pipeline import EasyAnimatePipeline

    pipe = EasyAnimatePipeline.from_pretrained(
        make_pipeline(tmp_path / "p", sampler=sampler, prediction_type=prediction_type)
    )
    with torch.no_grad():  # the random tiny DiT gives cross-attention some weight
        for block in pipe.transformer.transformer_blocks:
            block.attn2.to_out[0].weight.normal_(0, 0.5)
    latents = [torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    captions = [
        "a red circle moving left on a gray background",
        "a blue square moving up on a black background",
        "a green triangle standing still on a white background",
    ]
    reads = caption_sensitivity(pipe, latents, captions)
    assert reads["direction"]["n"] == 2 and reads["color"]["n"] == 3  # "still" has no direction to swap
    assert all(abs(r["relative_increase"]) > 1e-4 for r in reads.values())
    with torch.no_grad():  # cut every cross-attention: the text can no longer reach the output
        for block in pipe.transformer.transformer_blocks:
            block.attn2.to_out[0].weight.zero_()
            block.attn2.to_out[0].bias.zero_()
    blind = caption_sensitivity(pipe, latents, captions)
    assert all(r["relative_increase"] == 0.0 for r in blind.values())
    assert blind["color"]["loss_true_caption"] > 0


def test_learning_curve_scores_every_checkpoint_and_plots(tmp_path):
    """Each complete checkpoint's transformer/ in the base pipeline, scored and plotted; an unfinished `.tmp`
    checkpoint is skipped."""
    import json

    from conftest import make_pipeline
    from PIL import Image

    from easyanimate.eval.curve import learning_curve
    from easyanimate.models.transformer3d import VideoTransformer3DModel

    base = make_pipeline(tmp_path / "base", sampler="Flow", prediction_type="flow")
    model = VideoTransformer3DModel.from_pretrained(os.path.join(base, "transformer"))
    for name in ("checkpoint-00000004", "checkpoint-00000002", "checkpoint-00000006.tmp"):
        model.save_pretrained(tmp_path / "run" / "checkpoints" / name / "transformer")
    rows = learning_curve(
        str(tmp_path / "run"), base, str(tmp_path / "curve"), num_prompts=2, num_clips=2, steps=2
    )
    assert [r["step"] for r in rows] == [2, 4]
    assert all(0 <= r["color_accuracy"] <= 1 and "direction_sensitivity" in r for r in rows)
    assert json.load(open(tmp_path / "curve" / "curve.json")) == rows
    image = np.asarray(Image.open(tmp_path / "curve" / "curve.png").convert("RGB"))
    assert image.shape == (400, 640, 3) and (image != 255).any(axis=2).mean() > 0.01
    from easyanimate.eval.__main__ import build_parser  # the command line reaches it

    args = build_parser().parse_args(["curve", "--run", "r", "--base", base, "--num-prompts", "2"])
    assert (args.command, args.run, args.base, args.num_prompts, args.num_clips) == (
        "curve",
        "r",
        base,
        2,
        16,
    )
