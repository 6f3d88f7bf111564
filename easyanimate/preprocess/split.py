"""Scene split: PySceneDetect's ContentDetector finds cuts; long scenes are cut again; clips are re-encoded
frame-accurately with PyAV."""

from __future__ import annotations

from ..data.video_io import read_frame_range, video_length, write_video


def probe(path: str) -> dict:
    """fps, frame count, width, height (decodes to count frames when the header has none)."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.base_rate or 0)
        width, height = stream.width, stream.height
    return {"fps": fps, "num_frames": video_length(path), "width": width, "height": height}


def detect_scenes(
    path: str, threshold: float, start: int = 0, end: int | None = None
) -> list[tuple[int, int]]:
    """[(start_frame, end_frame_exclusive)], one per scene of frames `[start, end)`; the whole range when no cut
    is found. A range (a time window of a long video) is read by seeking, not from the first frame."""
    from scenedetect import ContentDetector, SceneManager, open_video

    video = open_video(path)
    if start:
        video.seek(start)
    manager = SceneManager()
    manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=2))
    manager.detect_scenes(video, end_time=end, show_progress=False)
    scenes = [(s.frame_num, e.frame_num) for s, e in manager.get_scene_list()]
    return scenes or [(start, probe(path)["num_frames"] if end is None else end)]


def plan_clips(
    scenes: list[tuple[int, int]], fps: float, min_seconds: float, max_seconds: float
) -> list[tuple[int, int]]:
    """Cut scenes longer than `max_seconds` into equal pieces; drop pieces shorter than `min_seconds`."""
    clips = []
    max_len, min_len = int(max_seconds * fps), int(round(min_seconds * fps))
    for start, end in scenes:
        length = end - start
        pieces = max(1, -(-length // max_len)) if max_len > 0 else 1
        step = length / pieces
        for k in range(pieces):
            a, b = start + round(k * step), start + round((k + 1) * step)
            if b - a >= max(min_len, 1):
                clips.append((a, b))
    return clips


def cut_clip(src: str, dst: str, start: int, end: int, fps: float) -> str:
    return write_video(dst, read_frame_range(src, start, end), fps=fps)
