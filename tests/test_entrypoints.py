"""Entry points: --help explains, and unbuilt features say so and exit non-zero."""

from __future__ import annotations

import pytest
from conftest import run_python


@pytest.mark.parametrize(
    "script,flag",
    [("predict_t2v.py", "--guidance-scale"), ("predict_i2v.py", "--start-image"), ("app.py", "--port")],
)
def test_help(script, flag):
    res = run_python(script, "--help")
    assert res.returncode == 0 and flag in res.stdout


def test_missing_model_fails_honestly(tmp_path):
    res = run_python("predict_t2v.py", "--prompt", "a red circle", "--model", str(tmp_path))
    assert res.returncode == 2 and "no model_index.json" in res.stderr and "Traceback" not in res.stderr


def test_app_refuses_a_malformed_auth_flag():
    res = run_python("app.py", "--auth", "no-colon")
    assert res.returncode == 2 and "user:password" in res.stderr
