"""The preprocessing graph on Ray Data: three jobs, each resumable through Ray Data's own checkpointing.

    videos --plan: probe, cut into time windows--> windows          (checkpointed by video id)
    windows --split: scene detection, clip files--> clips           (by window id)
    clips --filters: basic, quality, motion, tesseract OCR (tasks)
          --models: aesthetic, easyocr, captions (autoscaling actor pool)--> rows   (by clip id)

Each job reads the previous one's Parquet files under `<output>/work/` and streams its own rows there; Ray Data
commits a block's rows and its checkpoint together (`work/<job>_checkpoint/`), so after a crash or Ctrl-C a re-run
skips every id already written and loses nothing. `metadata.json` (training's "normal" format) and
`summary.json` are then written from the rows, file by file: no row travels to the driver through Ray.

Every row has the same columns with typed defaults ("" / NaN), so Arrow never sees a column that is text in one
block and null in another. A video that cannot be read becomes a row with its reason and never stops the run.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections import Counter
from typing import Any

from ..data.video_io import set_decode_threads
from . import storage
from .cluster import connect
from .config import EngineConfig, PreprocessConfig
from .filters.basic import basic_filter
from .filters.motion import motion_filter
from .filters.ocr import ocr_filter
from .filters.quality import AestheticScorer, quality_filter
from .split import cut_clip, detect_scenes, plan_clips, probe

NAN = float("nan")
STAGES = ("split", "basic", "quality", "motion", "ocr", "aesthetic", "caption")
SCORES = ("seconds", "sharpness", "brightness", "contrast", "aesthetic", "motion", "text_area")
WINDOW = {
    "video_id": "",
    "window_id": "",
    "source": "",
    "start_frame": 0,
    "end_frame": 0,
    "fps": NAN,
    "width": 0,
    "height": 0,
    "failed": "",  # why the video could not be read ("" when it could)
}
CLIP = {
    **WINDOW,
    "clip_id": "",
    "file_path": "",  # relative to the output: clips/<clip_id>.mp4 ("" for a row that is no clip)
    "num_frames": 0,
    "dropped_by": "",  # "<stage>: <reason>", "" when kept
    "split_node": "",
    "t_split": 0.0,
    "done_split": 0.0,  # wall clock when its task finished (the benchmark's steady-state throughput)
}
ROW = {
    **CLIP,
    **{k: NAN for k in SCORES},
    **{f"t_{s}": 0.0 for s in STAGES if s != "split"},
    "text": "",
    "filter_node": "",
    "done_filter": 0.0,
    "run": "",  # the run that computed this row: a resumed run leaves earlier runs' rows as they were
}


def typed(row: dict, schema: dict) -> dict:
    """`row` on `schema`'s columns, missing / None / NaN-for-text values replaced by the column's default."""
    out = {}
    for key, default in schema.items():
        value = row.get(key)
        if isinstance(default, str):
            value = value if isinstance(value, str) else default
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            value = default
        else:
            value = type(default)(value)
        out[key] = value
    return out


def _stem(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0]


def video_id(path: str) -> str:
    return f"{_stem(path)}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def _task_setup() -> str:
    """One thread per task (Ray charges one CPU): OpenCV's loops and the decoders. Returns this node's id."""
    import cv2
    import ray

    cv2.setNumThreads(1)
    set_decode_threads(1)
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def _failure(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]


def plan_video(row: dict, cfg: PreprocessConfig) -> list[dict]:
    """A video's time windows (`split.window_seconds`), so one long video is many tasks, not one straggler."""
    _task_setup()
    base = {"video_id": row["video_id"], "source": row["source"]}
    try:
        with storage.local_copy(row["source"]) as path:
            info = probe(path)
        if not info["num_frames"] or not info["fps"]:
            raise ValueError("no frames")
    except Exception as err:  # corrupt / unreadable: recorded, never fatal
        return [typed({**base, "window_id": f"{row['video_id']}_w000", "failed": _failure(err)}, WINDOW)]
    n, fps = info["num_frames"], info["fps"]
    size = max(1, int(cfg.split.window_seconds * fps)) if cfg.split.window_seconds > 0 else n
    return [
        typed(
            {
                **base,
                **info,
                "window_id": f"{row['video_id']}_w{k:03d}",
                "start_frame": a,
                "end_frame": min(n, a + size),
            },
            WINDOW,
        )
        for k, a in enumerate(range(0, n, size))
    ]


def split_window(row: dict, cfg: PreprocessConfig, out: str) -> list[dict]:
    """Scenes of one window, cut again to the clip length limits, written as clips/<clip_id>.mp4."""
    node = _task_setup()
    start = time.perf_counter()
    base = {**row, "split_node": node}

    def no_clip(**why) -> list[dict]:  # one row all the same, so the window is checkpointed and never redone
        return [typed({**base, "clip_id": row["window_id"], **why}, CLIP)]

    if row["failed"]:
        return no_clip(dropped_by="split: unreadable")
    clips = []
    try:
        with storage.local_copy(row["source"]) as path:
            scenes = detect_scenes(path, cfg.split.threshold, row["start_frame"], row["end_frame"])
            plan = plan_clips(scenes, row["fps"], cfg.split.min_seconds, cfg.split.max_seconds)
            for k, (a, b) in enumerate(plan):
                clip_id = f"{row['window_id']}_{k:03d}"
                rel = f"clips/{clip_id}.mp4"
                with storage.local_output(storage.join(out, rel)) as dst:
                    cut_clip(path, dst, a, b, row["fps"])
                clips.append(
                    {
                        **base,
                        "clip_id": clip_id,
                        "file_path": rel,
                        "start_frame": a,
                        "end_frame": b,
                        "num_frames": b - a,
                    }
                )
    except Exception as err:  # a window that fails to decode: the video is recorded as failed
        return no_clip(failed=_failure(err), dropped_by="split: unreadable")
    if not clips:
        return no_clip(dropped_by="split: no scene long enough")
    share = (time.perf_counter() - start) / len(clips)
    return [typed({**c, "t_split": share, "done_split": time.time()}, CLIP) for c in clips]


def _stage(row: dict, stage: str, fn) -> dict:
    """One filter on a row still kept: its scores, its verdict, its time. An error drops the clip, named."""
    if row["dropped_by"]:
        return row
    start = time.perf_counter()
    scores = dict(row)
    try:
        keep, reason = fn(scores)
    except Exception as err:
        keep, reason = False, f"{stage}: error {type(err).__name__}"
    return {**scores, "dropped_by": "" if keep else reason, f"t_{stage}": time.perf_counter() - start}


def cpu_filters(row: dict, cfg: PreprocessConfig, out: str, run_id: str) -> dict:
    node = _task_setup()
    row = {**typed(row, ROW), "filter_node": node, "run": run_id}
    if row["dropped_by"] or row["failed"]:
        return row
    with storage.local_copy(storage.join(out, row["file_path"])) as local:
        row["file_path_abs"] = local  # the filters read the clip here; typed() leaves it out of the row
        row = _stage(row, "basic", lambda r: basic_filter(r, cfg.basic))
        if cfg.quality.enabled:
            row = _stage(row, "quality", lambda r: quality_filter(r, cfg.quality))
        if cfg.motion.enabled:
            row = _stage(row, "motion", lambda r: motion_filter(r, cfg.motion))
        if cfg.ocr.backend == "tesseract":  # a subprocess per clip, no model to hold: a plain task
            row = _stage(row, "ocr", lambda r: ocr_filter(r, cfg.ocr))
    return typed({**row, "done_filter": time.time()}, ROW)


def needs_models(cfg: PreprocessConfig) -> bool:
    return cfg.ocr.backend == "easyocr" or bool(cfg.quality.aesthetic_model) or bool(cfg.caption.model)


class ModelStage:
    """An actor: loads its models once (easyocr reader, aesthetic scorer, captioner), then scores batches."""

    def __init__(self, cfg: PreprocessConfig, out: str):
        set_decode_threads(1)
        self.cfg, self.out = cfg, out
        self.ocr = None
        if cfg.ocr.backend == "easyocr":
            from .filters.ocr import EasyOCRBackend

            self.ocr = EasyOCRBackend(cfg.ocr.easyocr_models)
        self.aesthetic = AestheticScorer(cfg.quality.aesthetic_model) if cfg.quality.aesthetic_model else None
        self.captioner = None
        if cfg.caption.model:
            from .caption import Captioner

            self.captioner = Captioner(cfg.caption)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        rows = [typed(dict(zip(batch, values)), ROW) for values in zip(*batch.values())]
        rows = [self._score(r) for r in rows]
        self._captions(rows)
        return {k: [r[k] for r in rows] for k in ROW}

    def _score(self, row: dict) -> dict:
        if row["dropped_by"] or row["failed"] or (self.ocr is None and self.aesthetic is None):
            return row
        with storage.local_copy(storage.join(self.out, row["file_path"])) as local:
            row["file_path_abs"] = local
            if self.ocr is not None:
                row = _stage(row, "ocr", lambda x: ocr_filter(x, self.cfg.ocr, self.ocr))
            if self.aesthetic is not None:
                row = _stage(row, "aesthetic", lambda x: quality_filter(x, self.cfg.quality, self.aesthetic))
        return typed(row, ROW)

    def _captions(self, rows: list[dict]) -> None:
        from .caption import caption_frames

        todo = [r for r in rows if not r["dropped_by"] and not r["failed"]]
        if self.captioner is None or not todo:
            return
        start = time.perf_counter()
        frames = []
        for r in todo:
            with storage.local_copy(storage.join(self.out, r["file_path"])) as local:
                f = caption_frames({**r, "file_path_abs": local}, self.cfg.caption)
            frames.append(f[len(f) // 2])  # the middle sampled frame of each clip
        texts = self.captioner(frames)
        share = (time.perf_counter() - start) / len(todo)
        for r, text in zip(todo, texts):
            r["text"], r["t_caption"] = text, share


def _checkpoint_uri(write_uri: str) -> str:
    """Where Ray Data keeps the checkpoint of the job writing to `write_uri`."""
    return write_uri.rstrip("/") + "_checkpoint"


def _checkpointed(id_column: str, uri: str):
    from ray.data.checkpoint import CheckpointConfig

    fs, path = storage.resolve(uri)
    return CheckpointConfig(
        id_column=id_column, checkpoint_path=path, override_filesystem=fs, delete_checkpoint_on_success=False
    )


def _job(name: str, read_uri: str, id_column: str, build, write_uri: str, engine: EngineConfig) -> dict:
    """read Parquet -> build(ds) -> write Parquet, checkpointed by `id_column`; returns Ray Data's stats."""
    import ray

    ctx = ray.data.DataContext.get_current()
    fs_in, path_in = storage.resolve(read_uri)
    fs_out, path_out = storage.resolve(write_uri)
    ctx.checkpoint_config = _checkpointed(id_column, _checkpoint_uri(write_uri))
    try:
        start = time.perf_counter()
        ds = ray.data.read_parquet(path_in, filesystem=fs_in)
        # a task per row (`rows_per_task`): a video, a window or a clip is seconds of work, Ray's per-task cost
        # is tens of ms plus up to 0.1 s before Ray Data's scheduling loop sees the task finish
        ds = build(ds.repartition(target_num_rows_per_block=engine.rows_per_task))
        # the writer asks for little CPU so Ray does not fuse it into the last stage (whose tasks would then
        # wait for `rows_per_file` rows each): stages run a row per task, the writer gathers rows into files
        ds.write_parquet(
            path_out,
            filesystem=fs_out,
            min_rows_per_file=engine.rows_per_file,
            ray_remote_args={"num_cpus": 0.1},
        )
        seconds = time.perf_counter() - start
    finally:
        ctx.checkpoint_config = None
    return {"job": name, "seconds": round(seconds, 3), "stats": ds.stats()}


class TooFewCPUs(RuntimeError):
    """The Ray instance cannot run this job (resuming needs 2 CPUs)."""


def _has_files(fs, path: str) -> bool:
    found = fs.get_file_info(storage.pafs.FileSelector(path, allow_not_found=True))
    return any(f.type == storage.pafs.FileType.File for f in found)


JOB_OUTPUTS = ("windows", "clips", "rows")  # under work/: what the plan, split and filter jobs write


def run(input_uri: str, out: str, cfg: PreprocessConfig) -> dict:
    """Preprocess every video under `input_uri` into the dataset at `out` (paths or URIs); resumable."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    found = storage.find_videos(input_uri)
    videos = [uri for uri, _ in found]
    if "://" not in out:
        out = storage.resolve(out)[1]
    connect(cfg.engine)  # before writing anything: a cluster that refuses us leaves no half-made output
    work = storage.join(out, "work")
    fs, work_path = storage.resolve(work)
    # Ray Data runs a resumed job's checkpoint filter as an actor pool holding a whole CPU (Ray 2.60 sets only its
    # memory; not configurable): beside it there must still be a whole CPU for a task, or the job waits forever
    # (seen on a 1-CPU Ray, and on 2 CPUs with a model actor's share: see `actor_cpus` below)
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus < 2 and any(_has_files(fs, _checkpoint_uri(f"{work_path}/{name}")) for name in JOB_OUTPUTS):
        raise TooFewCPUs(
            f"{out} holds an earlier run to resume, and resuming needs at least 2 CPUs in Ray (this one has "
            f"{cpus:g}): Ray Data's checkpoint filter takes a whole CPU; set engine.num_cpus=2 (add "
            "engine.cpu_concurrency=1 to keep one task at a time)"
        )
    fs.create_dir(work_path, recursive=True)
    # the list of videos is the first job's input: rewritten each run (new videos join); ids from the path
    # inside the filesystem, so /data/x.mp4 and file:///data/x.mp4 are the same video
    ids = [video_id(path) for _, path in found]
    with fs.open_output_stream(f"{work_path}/videos.parquet") as fh:
        pq.write_table(pa.table({"video_id": ids, "source": videos}), fh)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.engine.progress_bars
    # Ray Data splits half the CPUs evenly between operators by default: the writer (0.1 CPU of work) held 0.8
    # of 2 CPUs and the filter stage ran one task at a time (measured). Our stages are the work: let them have it
    ctx.op_resource_reservation_enabled = False
    # The repartition into a row per block runs as one task holding a CPU until it has emitted every row; Ray
    # Data's downstream-capacity backpressure paused it while the stage was busy, so on 2 CPUs it held one of
    # them for the whole job and the stage ran one task at a time (seen in Ray Data's log). Rows are small:
    # let it finish and free its CPU (Ray Data's object-store budget still bounds the queue)
    ctx.downstream_capacity_backpressure_ratio = None
    # ... and a task's output stream pauses after 2 x this many blocks its consumer has not taken yet: the
    # repartition then still held its CPU for 5-6 s per job (34% of the filter job on 2 CPUs, in Ray's task
    # timeline), one stage task at a time meanwhile. Unbounded, it emits its one-row blocks in 0.07 s and frees
    # the CPU; the stages emit a few rows per task, so nothing else grows
    ctx._max_num_blocks_in_streaming_gen_buffer = None
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    tasks = (
        {"compute": ray.data.TaskPoolStrategy(size=cfg.engine.cpu_concurrency)}
        if cfg.engine.cpu_concurrency
        else {}
    )
    start = time.perf_counter()

    def windows(ds):
        return ds.flat_map(plan_video, fn_kwargs={"cfg": cfg}, **tasks)

    def clips(ds):
        return ds.flat_map(split_window, fn_kwargs={"cfg": cfg, "out": out}, **tasks)

    # the checkpoint filter's CPU (above) plus the model actor's share must leave a whole CPU for a task
    actor_cpus = cfg.engine.cpus_per_actor
    if needs_models(cfg) and cpus - actor_cpus < 2:
        actor_cpus = 0.0

    def rows(ds):
        ds = ds.map(cpu_filters, fn_kwargs={"cfg": cfg, "out": out, "run_id": run_id}, **tasks)
        if needs_models(cfg):  # no model: no actor holding resources
            ds = ds.map_batches(
                ModelStage,
                fn_constructor_kwargs={"cfg": cfg, "out": out},
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.engine.model_concurrency),
                num_cpus=actor_cpus,
                num_gpus=cfg.engine.gpus_per_actor or None,
                batch_size=cfg.caption.batch_size,
                batch_format="default",
            )
        return ds

    windows_uri, clips_uri, rows_uri = (f"{work}/{name}" for name in JOB_OUTPUTS)
    jobs = [
        _job("plan", f"{work}/videos.parquet", "video_id", windows, windows_uri, cfg.engine),
        _job("split", windows_uri, "window_id", clips, clips_uri, cfg.engine),
        _job("filter", clips_uri, "clip_id", rows, rows_uri, cfg.engine),
    ]
    summary = write_outputs(out, set(ids), time.perf_counter() - start, run_id)
    summary["jobs"] = {j["job"]: j["seconds"] for j in jobs}
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2))
    summary["stats"] = {j["job"]: j["stats"] for j in jobs}
    return summary


def iter_rows(out: str):
    """The rows of a run, file by file (never all of them in memory as Arrow, nor through Ray)."""
    import pyarrow.parquet as pq

    fs, path = storage.resolve(storage.join(out, "work", "rows"))
    files = fs.get_file_info(storage.pafs.FileSelector(path, recursive=True))
    for f in sorted(x.path for x in files if x.path.endswith(".parquet")):
        with fs.open_input_file(f) as fh:
            yield from pq.read_table(fh).to_pylist()


def write_outputs(out: str, videos: set[str], seconds: float, run_id: str) -> dict:
    """metadata.json and the summary from the rows of the videos in this run's input (`videos`: their ids; rows
    of videos since removed from the input stay in work/ but leave the dataset)."""
    metadata, seen = [], set()
    dropped: Counter = Counter()
    failures: dict[str, str] = {}  # video id -> reason (a video fails once, however many windows)
    stage_seconds: Counter = Counter()
    nodes: Counter = Counter()
    clips = computed = duplicates = 0
    for r in iter_rows(out):
        if r["video_id"] not in videos:
            continue
        if r["clip_id"] in seen:  # Ray's checkpointing is exactly-once per id: count it if that ever breaks
            duplicates += 1
            continue
        seen.add(r["clip_id"])
        computed += r["run"] == run_id
        for s in STAGES:
            stage_seconds[s] += r[f"t_{s}"]
        for node in (r["split_node"], r["filter_node"]):
            nodes[node] += bool(node)
        if r["failed"]:
            failures.setdefault(r["video_id"], r["failed"].split(":")[0])
            continue
        if r["file_path"]:
            clips += 1
        if r["dropped_by"]:
            dropped[r["dropped_by"]] += 1
            continue
        metadata.append(
            {
                "file_path": r["file_path"],
                "text": r["text"] or _stem(r["source"]).replace("_", " "),  # no captioner: the file name
                "type": "video",
                "width": r["width"],
                "height": r["height"],
                "num_frames": r["num_frames"],
                "fps": r["fps"],
                "source": r["source"],
                **{k: r[k] for k in SCORES if r[k] == r[k]},
            }
        )
    metadata.sort(key=lambda m: m["file_path"])
    storage.write_text(storage.join(out, "metadata.json"), json.dumps(metadata, indent=1))
    after: dict[str, int] = {}
    remaining = clips
    for stage in ("basic", "quality", "motion", "ocr", "aesthetic"):
        remaining -= sum(n for reason, n in dropped.items() if reason.startswith(f"{stage}:"))
        after[stage] = remaining
    return {
        "videos_in": len(videos),
        "videos_failed": len(failures),
        "failures_by_reason": dict(Counter(failures.values())),
        "clips_in": clips,
        "clips_kept_after": after,
        "clips_kept": len(metadata),
        "dropped_by_reason": dict(dropped),
        "rows_computed_this_run": computed,
        "rows_resumed": len(seen) - computed,
        "duplicate_rows": duplicates,
        "tasks_by_node": dict(nodes),  # split and filter tasks (of rows computed on Ray) per Ray node id
        "seconds_per_stage": {s: round(stage_seconds[s], 3) for s in STAGES},
        "wall_seconds": round(seconds, 3),
    }
