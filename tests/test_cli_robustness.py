"""Bad input gets a clear one-line error and nothing is lost (issue #22, items 2, 3 and part of 9): numeric flags,
non-finite results, the sidecar JSON, output names claimed atomically by runs sharing a folder."""

from __future__ import annotations

import importlib.util
import json
import math
import multiprocessing
import os
import re

import numpy as np
import pytest
import torch
from conftest import ROOT, make_pipeline, run_python
from safetensors.torch import load_file, save_file

from easyanimate.pipeline.predict import next_stem, save_outputs


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return make_pipeline(tmp_path_factory.mktemp("model"))


BASE = ["--prompt", "a red circle", "--num-frames", "5", "--height", "32", "--width", "32", "--steps", "2"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--guidance-scale", "inf"], "inf is not a finite number"),
        (["--guidance-scale", "nan"], "nan is not a finite number"),
        (["--lora-weight", "nan"], "nan is not a finite number"),
        (["--height", "0"], "0 is not a positive integer"),
        (["--fps", "0"], "0 is not a frame rate in 1..240"),
        (["--steps", "-3"], "-3 is not a positive integer"),
        (["--steps", "two"], "'two' is not an integer"),
    ],
)
def test_bad_numeric_flags_are_refused_in_one_line(tmp_path, capsys, model, flags, message):
    """predict_t2v.py's own main (in this process: argparse refuses before anything loads)."""
    spec = importlib.util.spec_from_file_location("predict_t2v", os.path.join(ROOT, "predict_t2v.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--model", model, *BASE, *flags, "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err, err
    assert not os.listdir(tmp_path)


def test_non_finite_weights_fail_instead_of_a_black_video(tmp_path, model):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    weights = broken / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["proj_out.weight"] = torch.full_like(state["proj_out.weight"], float("nan"))
    save_file(state, str(weights))
    out = tmp_path / "out"
    res = run_python("predict_t2v.py", "--model", str(broken), *BASE, "--output-dir", str(out))
    assert res.returncode == 2 and "denoised latents are not finite" in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and not (out.exists() and os.listdir(out))


def _claim(directory: str, queue) -> None:
    queue.put([next_stem(directory) for _ in range(5)])


def test_runs_sharing_a_folder_get_distinct_names(tmp_path):
    """Four processes claiming five names each at once: twenty distinct names (each claimed on disk)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(str(tmp_path), queue)) for _ in range(4)]
    for p in procs:
        p.start()
    stems = [s for _ in procs for s in queue.get(timeout=60)]
    for p in procs:
        p.join(timeout=60)
    assert len(stems) == 20 and len(set(stems)) == 20
    assert all(os.path.exists(s + ".json") for s in stems)


def test_sidecar_json_is_strict_and_a_failed_write_leaves_nothing(tmp_path):
    frames = np.zeros((3, 16, 16, 3), np.float32)
    paths = save_outputs(frames, {"guidance": float("nan"), "weird": object()}, str(tmp_path), 8, gif=False)
    with open(paths["settings"]) as fh:
        record = json.load(fh, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
    assert record["guidance"] == "nan" and math.isfinite(len(record["weird"]))
    with pytest.raises(ValueError):
        save_outputs(np.zeros((3, 16, 16), np.float32), {}, str(tmp_path), 8, gif=False)  # not (F, H, W, 3)
    assert sorted(os.listdir(tmp_path)) == ["0000.json", "0000.mp4"]  # the failed run's claim is gone


def _copy_model(model: str, dest) -> str:
    import shutil

    shutil.copytree(model, dest)
    return str(dest)


def test_broken_inputs_end_in_one_line(tmp_path, model):
    """An incomplete model folder, truncated weights, an unreadable start image: one line each, no traceback."""
    import shutil

    no_tok = _copy_model(model, tmp_path / "no_tokenizer")
    shutil.rmtree(os.path.join(no_tok, "tokenizer"))
    truncated = _copy_model(model, tmp_path / "truncated")
    weights = os.path.join(truncated, "transformer", "diffusion_pytorch_model.safetensors")
    with open(weights, "r+b") as fh:
        fh.truncate(os.path.getsize(weights) // 2)
    image = tmp_path / "start.png"
    image.write_bytes(b"not a png" * 10)
    inp = make_pipeline(tmp_path / "inp", inpaint=True)
    cases = [
        (["predict_t2v.py", "--model", no_tok, *BASE], "is incomplete: no tokenizer/"),
        (["predict_t2v.py", "--model", truncated, *BASE], "error: "),
        (["predict_i2v.py", "--model", inp, "--start-image", str(image), *BASE], "error: "),
    ]
    for args, message in cases:
        res = run_python(*args, "--output-dir", str(tmp_path / "out"))
        lines = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr[
            -2000:
        ]
        assert len(lines) == 1, res.stderr[-2000:]
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_strength_times_steps_below_one_is_refused(tmp_path, model):
    frames = (np.random.default_rng(0).random((5, 32, 32, 3)) * 255).astype(np.uint8)
    from easyanimate.data.video_io import write_video

    clip = write_video(str(tmp_path / "in.mp4"), frames)
    res = run_python(
        "predict_i2v.py", "--model", model, *BASE, "--video", clip, "--strength", "0.2",
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert (
        res.returncode == 2 and "leaves no denoising step" in res.stderr and "Traceback" not in res.stderr
    ), res.stderr[-2000:]


def test_a_mistyped_model_path_is_not_looked_up_on_the_hub(tmp_path, model):
    """diffusers would take `org/name` for a Hub repository and try to download it: ours refuse a path that is
    not a local folder unless `local_files_only=False` is passed."""
    from easyanimate.models.transformer3d import VideoTransformer3DModel
    from easyanimate.pipeline.pipeline_easyanimate import EasyAnimatePipeline

    for load, what in ((VideoTransformer3DModel.from_pretrained, "transformer"),
                       (EasyAnimatePipeline.from_pretrained, "pipeline")):  # fmt: skip
        with pytest.raises(
            FileNotFoundError, match=f"{what} 'PixArt-alpha/PixArt-XL-2-512x512' is not a local"
        ):
            load("PixArt-alpha/PixArt-XL-2-512x512")
    with pytest.raises(FileNotFoundError, match="transformer '.*/transformr' is not a local folder"):
        VideoTransformer3DModel.from_pretrained(model, subfolder="transformr")
    assert isinstance(EasyAnimatePipeline.from_pretrained(model), EasyAnimatePipeline)


def test_a_request_that_cannot_fit_is_refused_with_the_numbers(tmp_path, model):
    """8192x8192 would run until the machine kills it: the CLI estimates peak memory for this model first."""
    res = run_python("predict_t2v.py", "--model", model, *BASE[:-6], "--height", "8192", "--width", "8192",
                     "--steps", "1", "--device", "cpu", "--output-dir", str(tmp_path / "out"))  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert re.search(
        r"8192x8192 with 5 frames needs about [\d.]+ GB .*, [\d.]+ GB are free on cpu", res.stderr
    )
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_the_memory_estimate_follows_the_model():
    """The decode term scales with the VAE's decoder width (the demo VAE's 16 channels: 1/8 of the measured
    128-channel VAE's), and a demo-sized request fits a small machine."""
    from easyanimate.pipeline.loading import load_pipeline
    from easyanimate.pipeline.memory import estimate_for_pipeline, estimate_peak_memory

    pipe = load_pipeline(
        os.path.join(ROOT, "models", "Diffusion_Transformer", "EasyAnimate-demo"), device="cpu"
    )
    ours = estimate_for_pipeline(pipe, 512, 512, 17)
    measured_vae = estimate_peak_memory(1e6, 512, 512, 17, dtype_bytes=4, rule=pipe.shape_rule)
    assert math.isclose(ours.vae_decode_gb * 8, measured_vae.vae_decode_gb, rel_tol=1e-6)
    assert estimate_for_pipeline(pipe, 64, 64, 17).peak_gb < 1


def _frames() -> np.ndarray:
    """Moving colour ramps with a little noise: content an encoder cannot copy trivially."""
    yy, xx = np.mgrid[0:66, 0:90]
    ramps = [
        np.stack([(xx * 2 + 9 * t) % 256, (yy * 3 + 5 * t) % 256, (xx + yy) % 256], -1) for t in range(9)
    ]
    noise = np.random.default_rng(7).integers(-8, 9, (9, 66, 90, 3))
    return np.clip(np.stack(ramps) + noise, 0, 255).astype(np.uint8)


def _write_same_video(path: str) -> None:
    """Three times in one process (heap reuse is where uninitialised reads differ), then once more at `path`."""
    from easyanimate.data.video_io import write_video

    for k in range(3):
        write_video(f"{path}.{k}.mp4", _frames())
    write_video(path, _frames())


def test_the_same_frames_give_the_same_mp4_bytes_under_load(tmp_path):
    """Four processes encoding the same frames four times each, at once (the cores busy): identical files. 66x90 is not a whole
    number of macroblocks, where x264's mbtree made every run's file differ; x264 runs one thread."""
    ctx = multiprocessing.get_context("spawn")
    paths = [str(tmp_path / f"{i}.mp4") for i in range(4)]
    procs = [ctx.Process(target=_write_same_video, args=(p,)) for p in paths]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    files = [f for p in paths for f in (p, *(f"{p}.{k}.mp4" for k in range(3)))]
    contents = {open(f, "rb").read() for f in files}
    assert len(files) == 16 and len(contents) == 1
    from easyanimate.data.video_io import read_frames

    assert np.abs(read_frames(paths[0]).astype(int) - _frames()).mean() < 6  # crf 17: close, not exact


NUMERIC_FLAGS = {  # flag -> a small valid value (the rest of the run stays tiny)
    "--steps": "1", "--guidance-scale": "1.5", "--seed": "7", "--height": "32", "--width": "32",
    "--num-frames": "1", "--fps": "4", "--lora-weight": "0.5", "--total-frames": "9", "--overlap": "1",
}  # fmt: skip
HOSTILE = ["0", "-1", "nan", "inf", "-inf", "1e999", "abc", "", "0x10", "2.5", "99999999999999999999", "-0"]


def test_fuzzed_numeric_flags_give_one_line_errors_or_a_run(tmp_path, capsys, model):
    """Every hostile value on every numeric flag of predict_t2v.py, plus random numbers: a one-line error (exit
    2) or a video (exit 0), never a traceback. One process, the model loaded per accepted run."""
    spec = importlib.util.spec_from_file_location("predict_t2v", os.path.join(ROOT, "predict_t2v.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    rng = np.random.default_rng(0)
    cases = [(flag, value) for flag in NUMERIC_FLAGS for value in HOSTILE]
    cases += [
        (str(f), str(v)) for f, v in zip(rng.choice(list(NUMERIC_FLAGS), 12), rng.integers(-40, 40, 12))
    ]
    outcomes = {0: 0, 2: 0}
    base = ["--model", model, "--prompt", "a red circle", "--num-frames", "5", "--height", "32", "--width", "32",
            "--steps", "2", "--guidance-scale", "1", "--device", "cpu"]  # fmt: skip
    for i, (flag, value) in enumerate(cases):
        out = tmp_path / f"out{i}"
        try:
            code = cli.main([*base, flag, value, "--output-dir", str(out)])
        except SystemExit as stop:  # argparse
            code = stop.code
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error:" in line]
        assert code in (0, 2) and "Traceback" not in err, (flag, value, err[-1500:])
        if code == 2:
            assert len(errors) == 1, (flag, value, err[-800:])
            assert not out.exists() or not os.listdir(out), (flag, value)
        else:
            assert len(list(out.glob("*.mp4"))) == 1, (flag, value)
        outcomes[code] += 1
    assert outcomes[2] > 100 and outcomes[0] > 5, outcomes
