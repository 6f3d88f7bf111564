"""Atomic checkpoints with resume: a crash never leaves a half-written checkpoint behind.

Layout: `<output_dir>/checkpoints/checkpoint-<step>/` holding accelerate's state (models, optimizers,
schedulers, RNG states, registered objects), `trainer_state.json`, and what the trainer adds for inference
(the DiT trainer: `transformer/` or `lora.safetensors`). A checkpoint is written to a
`.tmp` folder and renamed into place only when complete; only the last `keep` are kept. `checksums.json` records
every file's size and SHA-256: resuming verifies them, and `latest` skips a damaged checkpoint (truncated,
missing or altered files) with a warning naming it, taking the newest intact one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from typing import Any

from accelerate import Accelerator

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
CHECKSUMS = "checksums.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints, oldest first (unfinished `.tmp` folders are ignored)."""
    root = checkpoint_dir(output_dir)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        m = _NAME.match(name)
        path = os.path.join(root, name)
        if m and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
        if name != CHECKSUMS
    )


def write_checksums(folder: str) -> None:
    sums = {rel: {"bytes": os.path.getsize(os.path.join(folder, rel)), "sha256": _sha256(os.path.join(folder, rel))}
            for rel in _files(folder)}  # fmt: skip
    with open(os.path.join(folder, CHECKSUMS), "w") as fh:
        json.dump(sums, fh, indent=1)


def damage(folder: str) -> str | None:
    """What is wrong with a checkpoint (a missing, truncated or altered file), or None when it is intact.
    Checkpoints written before checksums existed are taken as they are."""
    path = os.path.join(folder, CHECKSUMS)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as fh:
            sums = json.load(fh)
    except (OSError, ValueError):
        return f"{CHECKSUMS} is unreadable"
    for rel, expected in sums.items():
        file = os.path.join(folder, rel)
        if not os.path.isfile(file):
            return f"{rel} is missing"
        size = os.path.getsize(file)
        if size != expected["bytes"]:
            return f"{rel} has {size} bytes, {expected['bytes']} were written"
        if _sha256(file) != expected["sha256"]:
            return f"{rel} differs from what was written (checksum)"
    return None


def resolve_resume(output_dir: str, resume: str | None) -> str | None:
    """`"latest"` -> the newest intact checkpoint (damaged ones are skipped with a warning; None for a fresh
    run); a path -> that path, refused when damaged."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        for path in reversed(found):
            problem = damage(path)
            if problem is None:
                return path
            logger.warning("skipping damaged checkpoint %s: %s", path, problem)
        if found:
            raise ValueError(
                f"every checkpoint in {checkpoint_dir(output_dir)} is damaged; nothing to resume from"
            )
        return None
    if not os.path.isfile(os.path.join(resume, STATE_FILE)):
        raise FileNotFoundError(f"{resume} is not a complete checkpoint (no {STATE_FILE})")
    problem = damage(resume)
    if problem:
        raise ValueError(f"checkpoint {resume} is damaged: {problem}")
    return resume


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str,
    step: int,
    state: dict[str, Any],
    keep: int,
    write_extra: Callable[[str], None] | None = None,
) -> str:
    """accelerate's state + `trainer_state.json` (+ whatever `write_extra(folder)`, called on every process,
    writes: the model in its inference layout), renamed into place only when every process has written."""
    root = checkpoint_dir(output_dir)
    final = os.path.join(root, f"checkpoint-{step:08d}")
    tmp = final + ".tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    if write_extra is not None:  # on every process: it may gather sharded weights; the main process writes
        write_extra(tmp)
    accelerator.wait_for_everyone()  # every process has written its part before the folder is renamed
    if accelerator.is_main_process:
        with open(os.path.join(tmp, STATE_FILE), "w") as fh:
            json.dump({"step": step, **state}, fh, indent=2)
        write_checksums(tmp)
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: str) -> dict[str, Any]:
    # we register no pickled objects with accelerate (the EMA is safetensors + JSON); such a file here was not
    # written by us and is refused before anything could unpickle it
    foreign = sorted(f for f in os.listdir(path) if f.startswith("custom_checkpoint"))
    if foreign:
        raise ValueError(
            f"{path} holds {', '.join(foreign)}, which this trainer does not write: not loaded (unpickling can "
            "run code); remove it to resume from this checkpoint"
        )
    accelerator.load_state(path)
    with open(os.path.join(path, STATE_FILE)) as fh:
        return json.load(fh)
