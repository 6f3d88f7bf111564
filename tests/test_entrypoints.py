"""Entry points: --help explains, and unbuilt features say so and exit non-zero."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "script,flag",
    [("predict_t2v.py", "--guidance-scale"), ("predict_i2v.py", "--start-image"), ("app.py", "--port")],
)
def test_help(script, flag):
    res = run(script, "--help")
    assert res.returncode == 0 and flag in res.stdout


def test_missing_model_fails_honestly(tmp_path):
    res = run("predict_t2v.py", "--prompt", "a red circle", "--model", str(tmp_path))
    assert res.returncode == 2 and "no model_index.json" in res.stderr and "Traceback" not in res.stderr


def test_app_refuses_a_malformed_auth_flag():
    res = run("app.py", "--auth", "no-colon")
    assert res.returncode == 2 and "user:password" in res.stderr
