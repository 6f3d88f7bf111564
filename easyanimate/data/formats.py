"""The three metadata formats EasyAnimate users already have, read into one record type.

- "normal": JSON list, JSON Lines or CSV of `{"file_path", "text", "type": "image"|"video"}`, paths relative to
  a dataset root (absolute allowed); optional `width`, `height`, `num_frames` skip probing;
- "webvid": the WebVid CSV (`videoid`, `name` = caption, `page_dir`, ...) with videos at
  `<root>/<page_dir>/<videoid>.mp4`;
- "diffusers": `<root>/train/` images + `<root>/train/metadata.jsonl` (`file_name`, `text`).

A malformed file gives one `MetadataError` naming the file, the item (line) and the field.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Any

from .video_io import media_type

FORMATS = ("normal", "webvid", "diffusers")


class MetadataError(ValueError):
    """A metadata file is malformed; the message names file, item and field."""


@dataclass
class Record:
    path: str
    text: str
    type: str  # "image" | "video"
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _where(meta: str, index: int, line: int | None) -> str:
    return f"{meta}: item {index}" + (f" (line {line})" if line is not None else "")


def _record(
    item: Any, meta: str, index: int, line: int | None, root: str, path_key: str = "file_path"
) -> Record:
    where = _where(meta, index, line)
    if not isinstance(item, dict):
        raise MetadataError(
            f"{where}: expected an object with {path_key!r} and 'text', got {type(item).__name__}"
        )
    path = item.get(path_key)
    if not isinstance(path, str) or not path:
        raise MetadataError(f"{where}: field {path_key!r} is missing or not a string")
    text = item.get("text", "")
    if not isinstance(text, str):
        raise MetadataError(f"{where}: field 'text' must be a string, got {text!r}")
    kind = item.get("type") or media_type(path)
    if kind not in ("image", "video"):
        raise MetadataError(f"{where}: field 'type' must be 'image' or 'video', got {item.get('type')!r}")
    sizes: dict[str, int | None] = {}
    for key in ("width", "height", "num_frames"):
        value = item.get(key)
        if value in (None, ""):
            sizes[key] = None
            continue
        try:
            sizes[key] = int(value)
        except (TypeError, ValueError):
            raise MetadataError(f"{where}: field {key!r} must be an integer, got {value!r}") from None
    known = {path_key, "text", "type", "width", "height", "num_frames"}
    extra = {k: v for k, v in item.items() if k not in known}
    full = path if os.path.isabs(path) else os.path.join(root, path)
    return Record(full, text, kind, extra=extra, **sizes)


def _read_jsonl(lines, meta: str, root: str, path_key: str) -> list[Record]:
    records: list[Record] = []
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as err:
            raise MetadataError(f"{meta}: line {n}: not valid JSON ({err.msg})") from None
        records.append(_record(item, meta, len(records), n, root, path_key=path_key))
    return records


def load_normal(meta: str, root: str | None = None) -> list[Record]:
    root = root if root is not None else os.path.dirname(os.path.abspath(meta))
    ext = os.path.splitext(meta)[1].lower()
    with open(meta, newline="" if ext == ".csv" else None) as fh:
        if ext == ".csv":
            rows = list(csv.DictReader(fh))
            return [_record(r, meta, i, i + 2, root) for i, r in enumerate(rows)]  # line 1 is the header
        if ext == ".jsonl":
            return _read_jsonl(fh, meta, root, "file_path")
        try:
            items = json.load(fh)
        except json.JSONDecodeError as err:
            raise MetadataError(f"{meta}: line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(items, list):
        raise MetadataError(f"{meta}: expected a JSON list of items, got {type(items).__name__}")
    return [_record(item, meta, i, None, root) for i, item in enumerate(items)]


def load_webvid(meta: str, root: str) -> list[Record]:
    with open(meta, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"videoid", "name"} - set(reader.fieldnames or [])
        if missing:
            raise MetadataError(f"{meta}: WebVid CSV lacks column(s) {sorted(missing)}")
        records = []
        for i, row in enumerate(reader):
            if not row.get("videoid"):
                raise MetadataError(f"{_where(meta, i, i + 2)}: field 'videoid' is empty")
            rel = os.path.join(row.get("page_dir") or "", f"{row['videoid']}.mp4")
            item = {"file_path": rel, "text": row["name"], "type": "video", **row}
            item.pop("name")
            item.pop("videoid")
            records.append(_record(item, meta, i, i + 2, root))
    return records


def load_diffusers(root: str) -> list[Record]:
    train = os.path.join(root, "train")
    meta = os.path.join(train, "metadata.jsonl")
    if not os.path.isfile(meta):
        raise MetadataError(f"{root}: no train/metadata.jsonl (the diffusers image-folder layout)")
    with open(meta) as fh:
        return _read_jsonl(fh, meta, train, "file_name")


def load_records(fmt: str, meta: str | None, root: str | None = None) -> list[Record]:
    """Dispatch on the format name (`train_data_format` in the training scripts)."""
    if fmt == "normal":
        if meta is None:
            raise ValueError("the 'normal' format needs a metadata file")
        return load_normal(meta, root)
    if fmt == "webvid":
        if meta is None or root is None:
            raise ValueError("the 'webvid' format needs the CSV and the video folder")
        return load_webvid(meta, root)
    if fmt == "diffusers":
        return load_diffusers(root or meta or ".")
    raise ValueError(f"unknown data format {fmt!r}; choose from {FORMATS}")
