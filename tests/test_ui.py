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
    assert c.base_models() == ["tiny"] and c.motion_modules() == ["none"] and c.loras() == ["none"]
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
    cmd = [
        sys.executable,
        "app.py",
        "--port",
        str(port),
        "--model-root",
        model_root,
        "--default-size",
        "32",
        "--default-frames",
        "5",
        "--output-dir",
        str(tmp_path / "out"),
    ]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
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
            page.locator("#t2v-prompt textarea").fill("a red circle moving left on a gray background")
            page.locator("#t2v-generate").click()
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
            assert read_frames(str(saved)).shape == (5, 32, 32, 3)
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
