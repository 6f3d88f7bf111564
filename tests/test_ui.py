"""Web UI: model discovery, path safety, validation, model cache, and a real browser generating a video."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT, make_pipeline

from easyanimate.data.video_io import read_frames
from easyanimate.ui.controller import Controller, UIError

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("models")
    make_pipeline(root / "Diffusion_Transformer" / "tiny")
    make_pipeline(root / "Diffusion_Transformer" / "tiny-flow", sampler="Flow", prediction_type="flow")
    os.makedirs(root / "Diffusion_Transformer" / "not-a-model")  # no model_index.json: not listed
    os.makedirs(root / "Motion_Module")
    os.makedirs(root / "Personalized_Model")
    (root / "Personalized_Model" / "notes.txt").write_text("not a LoRA")
    return str(root)


def settings(**kw):
    base = dict(
        mode="t2v",
        prompt="a red circle moving left",
        negative_prompt="",
        base_model="tiny",
        motion_module="none",
        lora="none",
        lora_weight=0.55,
        sampler="DPM++",
        steps=2,
        guidance=6.0,
        seed=1,
        width=32,
        height=32,
        frames=5,
        fps=8,
    )
    return {**base, **kw}


def test_discovery_and_path_safety(model_root):
    c = Controller(model_root)
    assert (
        c.base_models() == ["tiny", "tiny-flow"] and c.motion_modules() == ["none"] and c.loras() == ["none"]
    )
    assert c.resolve("Diffusion_Transformer", "tiny").endswith(os.path.join("Diffusion_Transformer", "tiny"))
    for bad in ("../tiny", "/etc", "tiny/../../x", "not-a-model"):
        with pytest.raises(UIError, match="unknown"):
            c.resolve("Diffusion_Transformer", bad)
    with pytest.raises(UIError):
        c.resolve("Personalized_Model", "../../secret.safetensors")
    assert c.resolve("Motion_Module", "none") is None


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(width=30), "width must be a positive multiple of 16"),
        (dict(height=4096), "above this server's limit"),
        (dict(frames=8), r"frames must be 1 \+ 4k"),
        (dict(frames=401), "above this server's limit"),
        (dict(steps=0), "steps must be between"),
        (dict(prompt="   "), "write a prompt"),
        (dict(mode="i2v"), "upload a start image"),
        (dict(sampler="Heun"), "unknown sampler"),
    ],
)
def test_bad_values_become_messages(model_root, kw, message):
    with pytest.raises(UIError, match=message):
        Controller(model_root, max_frames=145).generate(settings(**kw))


def test_generate_and_model_cache(tmp_path, model_root):
    c = Controller(model_root, output_dir=str(tmp_path))
    steps_seen = []
    out = c.generate(settings(), progress=lambda i, n: steps_seen.append((i, n)))
    assert read_frames(out["video"]).shape == (5, 32, 32, 3) and steps_seen == [(1, 2), (2, 2)]
    c.generate(settings(seed=2, sampler="Euler"))
    assert c._loaded["loads"] == 1  # same base model: not reloaded


def test_page_defaults_follow_the_model(tmp_path, model_root):
    """Each model's sampler list holds only the samplers its objective takes (a flow model was offered DPM++,
    which it refuses), and the defaults generate as they are."""
    c = Controller(model_root, output_dir=str(tmp_path))
    flow, eps = c.defaults("tiny-flow"), c.defaults("tiny")
    assert flow["samplers"] == ["Flow"] and flow["sampler"] == "Flow"
    assert "Flow" not in eps["samplers"] and eps["sampler"] == "Euler" and "DPM++" in eps["samplers"]
    assert (flow["size"], flow["frames"]) == (32, 17)  # the tiny transformer's 4 latents x 8, and 17 = 1 + 4k
    with pytest.raises(UIError, match="does not fit a 'flow' model"):
        c.generate(settings(base_model="tiny-flow", sampler="DPM++"))
    out = c.generate(
        settings(base_model="tiny-flow", sampler=flow["sampler"], width=flow["size"], height=flow["size"])
    )
    assert read_frames(out["video"]).shape == (5, 32, 32, 3)


def test_one_frame_gives_an_image_and_long_videos_grow(tmp_path, model_root):
    c = Controller(model_root, output_dir=str(tmp_path))
    out = c.generate(settings(frames=1))
    assert out["image"].endswith(".png") and read_frames(out["video"]).shape[0] == 1
    long = c.generate(settings(frames=5, total_frames=13, overlap=1))
    assert read_frames(long["video"]).shape[0] >= 13  # segments of 5 sharing 1 frame: 5 + 4 + 4


def readme_client_example() -> str:
    with open(os.path.join(ROOT, "README.md")) as fh:
        text = fh.read()
    start = text.index("```python\nfrom gradio_client import Client")
    return text[start + len("```python\n") : text.index("```", start + 10)]


def test_readme_client_example_runs_against_the_demo_model(tmp_path):
    """The README's gradio_client call, as written, against `python app.py` serving models/ (the demo)."""
    port = free_port()
    cmd = [sys.executable, "app.py", "--port", str(port), "--output-dir", str(tmp_path / "out")]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        script = readme_client_example().replace("127.0.0.1:7860", f"127.0.0.1:{port}")
        res = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert res.returncode == 0, res.stderr[-3000:]
        written = res.stdout.strip().splitlines()[-1]
        assert written.startswith(str(tmp_path / "out")) and read_frames(written).shape == (17, 64, 64, 3)
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_for_port(port: int, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"nothing listens on port {port} after {seconds} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (make test installs it as root)"
)
def test_real_browser_generates_a_video(tmp_path, model_root):
    playwright = pytest.importorskip("playwright.sync_api")
    port = free_port()
    cmd = [  # the page's own defaults: size, frames, sampler and prompt come from the first model
        sys.executable,
        "app.py",
        "--port",
        str(port),
        "--model-root",
        model_root,
        "--output-dir",
        str(tmp_path / "out"),
    ]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_port(port)
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
        ]
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=flags, headless=True)
            page = browser.new_page()
            page.goto(url, wait_until="domcontentloaded", timeout=60000)  # gradio keeps connections open
            page.locator("#t2v-prompt textarea").wait_for(timeout=60000)
            page.locator("#t2v-generate").click()  # nothing changed: the page's defaults
            video = page.locator("#result-video video")
            video.wait_for(state="attached", timeout=120000)
            src = video.get_attribute("src")
            assert src
            body = page.request.get(src if src.startswith("http") else url.rstrip("/") + src).body()
            page.screenshot(path=str(tmp_path / "screenshot.png"), full_page=True)
            if os.environ.get("EASYANIMATE_SCREENSHOT"):  # keep a copy for a person to look at
                shutil.copy(tmp_path / "screenshot.png", os.environ["EASYANIMATE_SCREENSHOT"])
            saved = tmp_path / "from_browser.mp4"
            saved.write_bytes(body)
            assert read_frames(str(saved)).shape == (17, 32, 32, 3)
            # a bad value shows a message in the page, not a stack trace
            width = page.get_by_label("Width")
            width.fill("30")
            width.press("Tab")
            page.locator("#t2v-generate").click()
            page.get_by_text("multiple of 16").first.wait_for(timeout=60000)
            assert "Traceback" not in page.content()
            browser.close()
        assert os.path.getsize(tmp_path / "screenshot.png") > 1000
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp_path / "out", ignore_errors=True)


def test_results_have_unguessable_names_and_a_time_limit(tmp_path, model_root):
    """Issue #22 item 10: one client cannot fetch another's results by guessing `0000.mp4`; a generation past
    the server's time limit stops with a message and writes nothing; the page cleans gradio's upload cache."""
    import re

    from easyanimate.ui.app import UPLOAD_CACHE_CLEANUP, build_app

    c = Controller(model_root, output_dir=str(tmp_path / "a"))
    names = [os.path.basename(c.generate(settings(seed=i))["video"]) for i in range(2)]
    assert all(re.fullmatch(r"[0-9a-f]{16}\.mp4", n) for n in names) and names[0] != names[1]
    slow = Controller(model_root, output_dir=str(tmp_path / "b"), max_seconds=0)
    with pytest.raises(UIError, match="stopped after step 1: past this server's limit of 0 s"):
        slow.generate(settings())
    assert not (tmp_path / "b").exists() or not os.listdir(tmp_path / "b")
    big = Controller(model_root, output_dir=str(tmp_path / "c"), max_side=1 << 16)
    with pytest.raises(UIError, match=r"8192x8192 with 5 frames needs about [\d.]+ GB"):
        big.generate(settings(width=8192, height=8192))
    assert build_app(c).delete_cache == UPLOAD_CACHE_CLEANUP
