"""Read and write video frames.

PyAV is the default reader: it decodes every stream here. decord is faster on long videos but version 0.6.0
returns wrong strides for some frame widths (seen here with 48-pixel-wide H.264), so it is opt-in and its
output is checked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif"}
_decode_threads = 0  # FFmpeg's choice


def set_decode_threads(count: int) -> None:
    """Decoder threads for this process's reads (0: FFmpeg's choice). Preprocessing tasks set 1: Ray charges
    each task one CPU, and FFmpeg would otherwise start a thread per core in every task."""
    global _decode_threads
    _decode_threads = count


def media_type(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def count_frames(path: str) -> int:
    """Number of decodable frames (decodes the stream: exact, also where the header lies)."""
    import av

    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def video_length(path: str) -> int:
    """Frame count from the stream header, decoding to count only when the header has none."""
    import av

    with av.open(path) as container:
        n = container.streams.video[0].frames
        return n if n > 0 else sum(1 for _ in container.decode(video=0))


def read_frames(path: str, indices: Sequence[int] | None = None, backend: str = "pyav") -> np.ndarray:
    """Frames `(N, H, W, 3)` uint8 RGB at `indices` (all frames when None)."""
    if backend == "decord":
        frames = _read_decord(path, indices)
        if frames is not None:
            return frames
    import av

    wanted = None if indices is None else sorted(set(indices))
    got: dict[int, np.ndarray] = {}
    with av.open(path) as container:
        container.streams.video[0].thread_count = _decode_threads
        for i, frame in enumerate(container.decode(video=0)):
            if wanted is None or i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if wanted is not None and i >= wanted[-1]:
                break
    if not got:
        raise ValueError(f"no decodable frames in {path}")
    if indices is None:
        return np.stack([got[i] for i in sorted(got)])
    missing = [i for i in indices if i not in got]
    if missing:
        raise ValueError(f"{path}: frames {missing[:3]}... not decodable (video has {max(got) + 1})")
    return np.stack([got[i] for i in indices])


def read_frame_range(path: str, start: int, end: int) -> np.ndarray:
    """Frames `[start, end)`, decoded from the keyframe before `start` (a clip late in a long video does not
    decode everything before it). Falls back to decoding from the first frame where the stream's timestamps do
    not give exact frame numbers."""
    import av

    frames = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = _decode_threads
        rate, base = stream.average_rate or stream.base_rate, stream.time_base
        offset = stream.start_time or 0
        if rate and base:
            if start > 0:
                container.seek(offset + int(start / float(rate) / float(base)), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    frames = []
                    break
                index = round(float((frame.pts - offset) * base * rate))
                if index >= end:
                    break
                if index >= start:
                    frames.append(frame.to_ndarray(format="rgb24"))
    if len(frames) == end - start:
        return np.stack(frames)
    return read_frames(path, list(range(start, end)))


def _read_decord(path: str, indices: Sequence[int] | None) -> np.ndarray | None:
    try:
        import decord
    except ImportError:
        return None
    try:
        reader = decord.VideoReader(path)
        idx = list(range(len(reader))) if indices is None else list(indices)
        frames = reader.get_batch(idx).asnumpy()
    except Exception:  # decord raises its own error types; PyAV takes over
        return None
    return frames if frames.ndim == 4 and frames.shape[-1] == 3 else None


def read_image(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def write_video(path: str, frames: np.ndarray, fps: float = 8) -> str:
    """Write `(N, H, W, 3)` uint8 frames as H.264 mp4 (yuv420p; odd sizes padded by one edge pixel)."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.mp4"
    with av.open(tmp, "w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "17"}
        if frames.shape[1] % 16 or frames.shape[2] % 16:
            # x264's macroblock-tree rate control reads uninitialised memory beyond a size that is not a whole
            # number of 16-pixel macroblocks: the same frames gave a different file on every run (measured at
            # 66x90: 4 runs, 4 files; with mbtree=0 or whole macroblocks, 4 identical files)
            stream.options["x264-params"] = "mbtree=0"
        # one encoder thread: x264's frame threads made identical frames encode differently (seen 1 run in 3
        # here, up to 14 levels after decoding); a single thread is deterministic and fast at these sizes
        stream.codec_context.thread_count = 1
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)  # no half-written videos
    return path


def to_uint8_frames(video) -> np.ndarray:
    """A tensor `(3, F, H, W)` in [-1, 1] -> `(F, H, W, 3)` uint8."""
    import torch

    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def save_video_tensor(path: str, video, fps: float = 8) -> str:
    """A tensor `(3, F, H, W)` in [-1, 1] -> an mp4 at `path` (written atomically)."""
    return write_video(path, to_uint8_frames(video), fps=fps)
