"""Local folders only: a mistyped path must be an error naming it, not a download attempt from the Hub."""

from __future__ import annotations

import json
import os
from typing import Any


def require_local(path: Any, kwargs: dict[str, Any], what: str) -> None:
    """Refuse a `from_pretrained` source that is not a local folder, unless the caller passed
    `local_files_only=False` (the explicit opt-in to the Hugging Face Hub); otherwise load local files only."""
    if kwargs.get("local_files_only") is False:
        return
    sub = kwargs.get("subfolder")
    folder = os.path.join(str(path), sub) if sub else str(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"{what} {folder!r} is not a local folder (nothing is downloaded unless local_files_only=False)"
        )
    kwargs["local_files_only"] = True


def read_local_config(path: Any, subfolder: str | None, what: str) -> tuple[str, dict[str, Any]]:
    """`(folder, config)` of a local model folder (`path`, or its `subfolder`): an error naming the folder when
    it has no config.json, where diffusers would look the name up on the Hub."""
    folder = os.path.join(str(path), subfolder) if subfolder else str(path)
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no {what} config.json in {folder} (a local {what} folder is expected)")
    with open(config_path) as fh:
        return folder, json.load(fh)
