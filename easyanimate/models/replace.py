"""Writing a model file or folder in place of an old one without readers ever seeing it half-written."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any


def write_replacing(path: str, write: Callable[[str], Any]) -> Any:
    """`write(tmp)` builds the file or folder beside `path` (`<path>.tmp`), which then takes `path`'s place in
    one rename (an old folder is removed just before): a failed write leaves the old one. Returns what `write`
    returned."""
    tmp = path.rstrip("/") + ".tmp"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    elif os.path.exists(tmp):
        os.remove(tmp)
    result = write(tmp)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(tmp, path)
    return result
