"""Preprocessing: scene split, filters, captioning, Ray engine, failures, resume after Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, run_command

from easyanimate.config import load_config
from easyanimate.data.datasets import VideoDataset
from easyanimate.data.formats import load_records
from easyanimate.data.synthetic_raw import make_raw_videos
from easyanimate.data.video_io import count_frames
from easyanimate.preprocess.config import MotionFilter, OCRFilter, PreprocessConfig, QualityFilter
from easyanimate.preprocess.filters.motion import motion_filter
from easyanimate.preprocess.filters.ocr import ocr_filter
from easyanimate.preprocess.filters.quality import quality_filter
from easyanimate.preprocess.split import detect_scenes, plan_clips

TESSERACT = shutil.which("tesseract") is not None
TEST_SETTINGS = [
    "split.min_seconds=1.5",
    "motion.min_motion=0.5",
    "motion.max_motion=12",
    "engine.num_cpus=2",
]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict[str, str]:
    return make_raw_videos(str(tmp_path_factory.mktemp("raw")))


def record(path):
    return {"file_path_abs": path, "num_frames": count_frames(path)}


def test_scene_split_finds_the_cut_and_obeys_lengths(raw):
    scenes = detect_scenes(raw["two_scenes"], threshold=27.0)
    assert len(scenes) == 2 and abs(scenes[0][1] - 32) <= 1
    # 8 fps: a 100-frame scene with max 5 s -> 3 pieces of <= 40 frames; a 10-frame scene < 3 s is dropped
    clips = plan_clips([(0, 100), (100, 110)], fps=8, min_seconds=3, max_seconds=5)
    assert [b - a for a, b in clips] == [33, 34, 33] and clips[-1][1] == 100


def test_motion_filter_drops_static_and_chaotic(raw):
    cfg = MotionFilter(min_motion=0.5, max_motion=12)
    results = {k: motion_filter(record(raw[k]), cfg) for k in ("static", "chaotic", "text")}
    assert results["static"] == (False, "motion: static")
    assert results["chaotic"] == (False, "motion: chaotic")
    assert results["text"] == (True, None)


def test_quality_filter_drops_dark_blurry_clip(raw):
    good, dark = record(raw["text"]), record(raw["dark"])
    assert quality_filter(good, QualityFilter()) == (True, None)
    keep, reason = quality_filter(dark, QualityFilter())
    assert not keep and reason.startswith("quality:") and dark["brightness"] < 30 and dark["sharpness"] < 20


@pytest.mark.skipif(
    not TESSERACT, reason="Debian's tesseract-ocr is not installed (make test installs it as root)"
)
def test_tesseract_ocr_filter(raw):
    text, plain = record(raw["text"]), record(raw["static"])
    assert ocr_filter(text, OCRFilter()) == (False, "ocr: text") and text["text_area"] > 0.05
    assert ocr_filter(plain, OCRFilter()) == (True, None) and plain["text_area"] == 0


def test_easyocr_backend_missing_is_a_clear_error():
    from easyanimate.preprocess.filters.ocr import EasyOCRBackend

    with pytest.raises(ImportError, match="tesseract"):
        EasyOCRBackend(None)


def tiny_captioner(path) -> str:
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "a",
        "red",
        "blue",
        "square",
        "moving",
        "on",
        "background",
    ]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    text = dict(
        vocab_size=len(words),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    text.update(bos_token_id=2, eos_token_id=3, pad_token_id=0, sep_token_id=3, max_position_embeddings=64)
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(
        BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    ).save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


@pytest.mark.skipif(
    not TESSERACT, reason="Debian's tesseract-ocr is not installed (make test installs it as root)"
)
def test_end_to_end_on_ray(tmp_path, raw):
    from easyanimate.preprocess.engine import run

    cfg = load_config(PreprocessConfig, os.path.join(ROOT, "config", "preprocess.yaml"), TEST_SETTINGS)
    cfg.basic.min_width = cfg.basic.min_height = 64
    cfg.caption.model = tiny_captioner(tmp_path / "blip")
    out, inputs = tmp_path / "out", tmp_path / "raw"
    shutil.copytree(os.path.dirname(raw["static"]), inputs)
    summary = run(str(inputs), str(out), cfg)
    assert summary["videos_in"] == 6 and summary["videos_failed"] == 1  # the corrupt file, reported
    assert summary["clips_in"] == 6 and summary["clips_kept"] == 2
    assert summary["dropped_by_reason"] == {
        "quality: blurry": 1,
        "motion: static": 1,
        "motion: chaotic": 1,
        "ocr: text": 1,
    } or summary["dropped_by_reason"] == {
        "quality: too dark or too bright": 1,
        "motion: static": 1,
        "motion: chaotic": 1,
        "ocr: text": 1,
    }
    assert set(summary["seconds_per_stage"]) >= {"split", "quality", "motion", "ocr", "caption"}
    meta = json.load(open(out / "metadata.json"))
    assert sorted(os.path.basename(m["file_path"]) for m in meta) == sorted(
        f"{os.path.basename(m['file_path']).rsplit('_', 1)[0]}_{k:03d}.mp4" for k, m in enumerate(meta)
    )
    assert all(m["source"].endswith("two_scenes.mp4") and m["num_frames"] == 32 for m in meta)
    assert all(m["text"] and m["text"] != "two scenes" for m in meta)  # captions from the model
    assert all({"sharpness", "motion", "text_area"} <= set(m) for m in meta)
    # the output is a training dataset our loader reads
    records = load_records("normal", str(out / "metadata.json"))
    sample = VideoDataset(records, height=64, width=64, num_frames=9)[0]
    assert sample["pixels"].shape == (3, 9, 64, 64)
    # a re-run after removing a video: nothing recomputed, its clips leave the dataset
    os.remove(inputs / "two_scenes.mp4")
    again = run(str(inputs), str(out), cfg)
    assert again["rows_computed_this_run"] == 0 and again["rows_resumed"] == 5
    assert (
        again["videos_in"] == 5 and again["clips_kept"] == 0 and json.load(open(out / "metadata.json")) == []
    )


def test_resuming_on_one_cpu_is_refused_in_one_line(tmp_path, raw):
    """Ray Data's checkpoint filter holds a whole CPU during a resumed job: on a 1-CPU Ray the re-run waited
    forever (measured). A fresh run on 1 CPU works; the re-run stops at once, saying what to set."""
    import ray

    from easyanimate.preprocess.engine import TooFewCPUs, run

    settings = [s for s in TEST_SETTINGS if not s.startswith("engine.num_cpus")]
    cfg = load_config(PreprocessConfig, None, [*settings, "engine.num_cpus=1", "ocr.backend=null"])
    inputs, out = tmp_path / "raw", tmp_path / "out"
    inputs.mkdir()
    shutil.copy(raw["two_scenes"], inputs)
    ray.shutdown()  # a Ray of 1 CPU for this test (connect keeps an instance that is already up)
    try:
        assert run(str(inputs), str(out), cfg)["clips_in"] == 2
        before = sorted(os.listdir(out / "work"))
        with pytest.raises(TooFewCPUs, match="engine.num_cpus=2"):
            run(str(inputs), str(out), cfg)
        assert sorted(os.listdir(out / "work")) == before  # refused before writing anything
    finally:
        ray.shutdown()


def committed(out) -> dict:
    """Files Ray Data has committed under work/ (a data file whose checkpoint is no longer pending), with mtimes,
    and the clip videos those committed rows name."""
    import pyarrow.parquet as pq

    files = {}
    for job in ("windows", "clips", "rows"):
        done = {
            p.stem for p in (out / "work" / f"{job}_checkpoint").glob("*.parquet") if ".pending" not in p.name
        }
        for data in (out / "work" / job).glob("*.parquet"):
            if data.stem.rsplit("-", 1)[0] in done:
                files[data] = data.stat().st_mtime_ns
                if job == "clips":
                    for rel in pq.read_table(data).column("file_path").to_pylist():
                        if rel:
                            files[out / rel] = (out / rel).stat().st_mtime_ns
    return files


@pytest.mark.skipif(
    not TESSERACT, reason="Debian's tesseract-ocr is not installed (make test installs it as root)"
)
def test_two_node_cluster_uri_output_ctrl_c_then_rerun(tmp_path, raw):
    """A real cluster: `ray start --head` + a second `ray start --address` node, 1 CPU each, on 127.0.0.1, with
    token authentication; input and output as file:// URIs. A driver without the token stops with one line; with
    it, both nodes run tasks; Ctrl-C midway, then a re-run recomputes nothing that was committed and loses
    nothing."""
    import uuid

    from easyanimate.preprocess.cluster import LocalCluster

    token = tmp_path / "auth_token"
    token.write_text(uuid.uuid4().hex)
    # `ray start` turns token auth on when it finds a token; the driver must find the same one by itself
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["RAY_AUTH_TOKEN_PATH"] = str(token)
    (tmp_path / "home").mkdir()
    no_token = {**env, "HOME": str(tmp_path / "home")}
    del no_token["RAY_AUTH_TOKEN_PATH"]

    inputs = tmp_path / "raw"
    shutil.copytree(os.path.dirname(raw["static"]), inputs)
    for k in range(8):  # more work, so the interrupt lands midway
        shutil.copy(inputs / "text.mp4", inputs / f"more_{k}.mp4")
    out = tmp_path / "out"
    with LocalCluster(nodes=2, cpus=1, log_dir=str(tmp_path), env=env) as address:
        # our package reaches the nodes through the job's runtime_env, not through this checkout (run from
        # elsewhere: Ray puts a driver's folder on its workers' path)
        probe = (
            "import ray; from easyanimate.preprocess.cluster import connect; "
            "from easyanimate.preprocess.config import EngineConfig; "
            f"connect(EngineConfig(ray_address='{address}')); "
            "f = ray.remote(lambda: __import__('easyanimate').__file__); print(ray.get(f.remote()))"
        )
        res = subprocess.run(
            [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
        )
        assert res.returncode == 0 and "runtime_resources" in res.stdout, res.stdout + res.stderr[-2000:]

        cmd = [sys.executable, "-m", "easyanimate.preprocess", "--input", f"file://{inputs}"]
        cmd += ["--output", f"file://{out}", "--ray-address", address, *TEST_SETTINGS[:-1]]
        cmd += ["basic.min_width=64", "basic.min_height=64", "engine.rows_per_file=1"]
        res = run_command(cmd, timeout=200, env=no_token)
        assert res.returncode == 2 and not out.exists(), res.stderr[-2000:]
        error = res.stderr.strip().splitlines()[-1]
        assert error.startswith("error: cannot join the Ray cluster") and "RAY_AUTH_TOKEN_PATH" in error

        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        clips_done = out / "work" / "clips_checkpoint"
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if len([p for p in clips_done.glob("*.parquet") if ".pending" not in p.name]) >= 3:
                break
            time.sleep(0.05)
        # one SIGINT can land where it is swallowed (Ray starting up) and the run then finishes: repeat it
        deadline = time.time() + 60
        while proc.poll() is None and time.time() < deadline:
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
        proc.wait(timeout=30)
        before = committed(out)
        assert before and not (out / "summary.json").exists()

        res = run_command(cmd, timeout=400, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # committed work was not redone
    summary = json.load(open(out / "summary.json"))
    counts = {
        k: summary[k] for k in ("videos_in", "videos_failed", "clips_in", "clips_kept", "duplicate_rows")
    }
    # nothing lost, nothing twice
    assert counts == dict(videos_in=14, videos_failed=1, clips_in=14, clips_kept=2, duplicate_rows=0), summary
    rows_before = sum(1 for p in before if "/rows/" in str(p))
    assert summary["rows_resumed"] == rows_before, summary
    assert len(summary["tasks_by_node"]) == 2, summary  # both nodes ran tasks
    assert len(json.load(open(out / "metadata.json"))) == 2


def test_stages_on_a_remote_filesystem(tmp_path, raw):
    """A filesystem that is not local (fsspec's in-memory one): each stage copies its input to a local file and
    uploads what it writes; the results equal the local run's."""
    import fsspec

    from easyanimate.preprocess import engine, storage

    mem = fsspec.filesystem("memory")
    mem.put_file(raw["two_scenes"], "/raw/sub/two_scenes.mp4")
    assert storage.list_videos("memory://raw") == ["memory://raw/sub/two_scenes.mp4"]
    cfg = load_config(
        PreprocessConfig, None, ["split.min_seconds=1.5", "ocr.backend=null", "split.window_seconds=5"]
    )
    rows = {}
    for where, src, out in (
        ("remote", "memory://raw/sub/two_scenes.mp4", "memory://out"),
        ("local", raw["two_scenes"], str(tmp_path / "out")),
    ):
        windows = engine.plan_video({"video_id": "v", "source": src}, cfg)
        assert [(w["start_frame"], w["end_frame"]) for w in windows] == [
            (0, 40),
            (40, 64),
        ]  # 5 s windows at 8 fps
        clips = [c for w in windows for c in engine.split_window(w, cfg, out)]
        rows[where] = [engine.cpu_filters(c, cfg, out, "run") for c in clips]
    assert mem.exists("/out/clips/v_w000_000.mp4")
    strip = ("source", "t_split", "t_basic", "t_quality", "t_motion", "done_split", "done_filter")
    assert [{k: v for k, v in r.items() if k not in strip} for r in rows["remote"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in rows["local"]
    ]
    # scenes cut at the shot change (frame 32) and at the window edge (frame 40)
    assert [(r["start_frame"], r["end_frame"]) for r in rows["local"]] == [(0, 32), (40, 64)]


def test_aesthetic_scorer_from_a_local_folder(tmp_path, raw):
    import torch
    from conftest import make_tiny_clip_vision
    from safetensors.torch import save_file

    from easyanimate.preprocess.filters.frames import sample_frames
    from easyanimate.preprocess.filters.quality import AestheticScorer

    make_tiny_clip_vision(tmp_path)
    head = {
        "layers.0.weight": torch.randn(16, 32),
        "layers.0.bias": torch.zeros(16),
        "layers.1.weight": torch.randn(1, 16),
        "layers.1.bias": torch.full((1,), 5.0),
    }
    save_file(head, str(tmp_path / "aesthetic_head.safetensors"))
    scorer = AestheticScorer(str(tmp_path))
    frames = sample_frames(raw["text"], 4, count_frames(raw["text"]))
    score = scorer(frames)
    assert np.isfinite(score) and score != 5.0  # the head's bias alone would give 5.0
    assert scorer(frames) == score  # deterministic
    other = scorer(sample_frames(raw["dark"], 4, count_frames(raw["dark"])))
    assert other != score
    with pytest.raises(FileNotFoundError, match="aesthetic head"):
        AestheticScorer(str(tmp_path / "missing"))


def test_benchmark_measures_steady_throughput_and_busy_slots():
    """The benchmark's two measures on known timelines: clips/s between the first and last finish; tasks running
    at once over a stage's span (Ray's timeline events: microseconds), per stage."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from bench_preprocess import busy_slots, steady

    assert steady([0.0, 10.0, 11.0, 12.0]) == pytest.approx(1.0)  # 0 = no finish time recorded: left out
    assert steady([5.0]) == 0.0

    def task(stage: str, start_s: float, end_s: float) -> dict:
        return {"cat": f"task::Map({stage})", "ph": "X", "ts": start_s * 1e6, "dur": (end_s - start_s) * 1e6}

    events = [task("cpu_filters", 0, 2), task("cpu_filters", 0, 2), task("cpu_filters", 2, 4)]  # 2 then 1
    events += [task("split_window", 0, 1), task("split_window", 1, 2)]  # one after the other
    events += [{"cat": "task:execute", "ph": "X", "ts": 0, "dur": 9e6}]  # a task's phase, not a task: ignored
    assert busy_slots(events) == {"cpu_filters": 1.5, "split_window": 1.0}
