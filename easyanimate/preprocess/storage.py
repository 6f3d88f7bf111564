"""Where a preprocessing run reads and writes: local paths or URIs (`file:///...`, `s3://bucket/...`, any
scheme pyarrow or fsspec knows), so every node of a cluster sees the same inputs and outputs.

Scene detection and the codecs need local files: on a remote filesystem a task copies its video to a local
temporary file, works there and uploads what it writes. On a local filesystem nothing is copied, but every
node must then mount it at the same path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

import pyarrow.fs as pafs

from ..data.video_io import media_type


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it). Plain paths are local and made absolute (tasks run in other folders)."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, TypeError) as err:  # a scheme pyarrow lacks (ArrowInvalid is a ValueError): fsspec
        try:
            import fsspec

            fs, path = fsspec.core.url_to_fs(uri)
        except (ImportError, ValueError) as fsspec_err:
            raise FileNotFoundError(f"no filesystem can open {uri}: {err}; fsspec: {fsspec_err}") from err
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def list_videos(uri: str) -> list[str]:
    """Every video under `uri` (recursive), as URIs / paths of the same kind as `uri`, sorted."""
    return [video for video, _ in find_videos(uri)]


def find_videos(uri: str) -> list[tuple[str, str]]:
    """(URI or path of the same kind as `uri`, path inside its filesystem) of every video under `uri`, sorted;
    the filesystem is resolved once for the whole listing."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"input folder not found: {uri}")
    found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    rel = sorted(
        f.path[len(path.rstrip("/")) + 1 :]
        for f in found
        if f.type == pafs.FileType.File and media_type(f.path) == "video"
    )
    base = uri if "://" in uri else os.path.abspath(uri)
    return [(join(base, r), join(path, r)) for r in rel]


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """A local path holding the file at `uri` (the file itself when it is local)."""
    fs, path = resolve(uri)
    if is_local(fs):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="easyanimate_in_") as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        with fs.open_input_stream(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        yield local


@contextlib.contextmanager
def local_output(uri: str) -> Iterator[str]:
    """A local path to write; on leaving, the file is at `uri` (moved into place: never half-written there)."""
    fs, path = resolve(uri)
    if is_local(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="easyanimate_out_") as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        yield local
        if os.path.exists(local):
            fs.create_dir(os.path.dirname(path), recursive=True)
            with open(local, "rb") as src, fs.open_output_stream(path) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def write_text(uri: str, text: str) -> None:
    """Atomic on local disks (temp file + rename); object stores publish a put whole."""
    fs, path = resolve(uri)
    if is_local(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
        return
    fs.create_dir(os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path) as fh:
        fh.write(text.encode())


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound
