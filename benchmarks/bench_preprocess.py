"""Preprocessing throughput on Ray Data, steady state: 1 vs 2 workers (a local Ray with 1 or 2 CPUs) and 1 vs 2 nodes
(a cluster of 1-CPU nodes started on this machine with `ray start`, as `LocalCluster` does).

Reference in the same run: the same stage functions in a plain process pool (no Ray), 1 vs 2 processes: how
much two processes can gain on this machine at all.

Steady state: clips finished per second between the first and the last clip of a stage, from each row's finish
time, so a job's start-up (Ray's workers, the first task's imports) is not counted. Ray Data's own per-operator
throughput (`ds.stats()`) is recorded beside it, and each stage's busy slots (its tasks running at once, from
Ray's task timeline: Ray's scheduling apart from this machine's own 2-core scaling). Synthetic raw videos (pans,
cuts, text, still and dark shots) at 512x384, so a clip is about a second of work as with real footage (at 128x96
Ray's per-task cost dominates); OCR (tesseract) on when installed, captioning off.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, write_results  # noqa: E402

from easyanimate.config import load_config  # noqa: E402
from easyanimate.data.synthetic_raw import make_raw_videos  # noqa: E402
from easyanimate.preprocess.config import PreprocessConfig  # noqa: E402

SETTINGS = [
    "split.min_seconds=1.5",
    "motion.min_motion=0.5",
    "motion.max_motion=12",
    "basic.min_width=64",
    "basic.min_height=64",
    "engine.progress_bars=false",
]


def steady(times: list[float]) -> float:
    """Items per second between the first and the last finish."""
    times = sorted(t for t in times if t > 0)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


def ray_throughput(stats: str) -> dict[str, float]:
    """Operator name -> Ray Data's rows/s, from a `ds.stats()` report."""
    out, name = {}, None
    for line in stats.splitlines():
        m = re.match(r"Operator \d+ (.+?):", line)
        if m:
            name = m.group(1)
        m = re.search(r"\* Ray Data throughput: ([\d.]+) rows/s", line)
        if m and name:
            out[name] = float(m.group(1))
            name = None
    return out


def busy_slots(events: list[dict]) -> dict[str, float]:
    """Stage -> mean number of its tasks running at once between its first start and last end, from Ray's task
    timeline: how well Ray keeps the workers busy, apart from how fast each task runs on this machine."""
    from easyanimate.preprocess import engine

    stages = [f.__name__ for f in (engine.plan_video, engine.split_window, engine.cpu_filters)]
    spans: dict[str, list[tuple[float, float]]] = {}
    for e in events:
        cat = e.get("cat", "")
        if e.get("ph") != "X" or not cat.startswith("task::"):  # a whole task, not one of its phases
            continue
        for stage in stages:  # Ray names a map task after the stage function: task::FlatMap(split_window)
            if stage in cat:
                spans.setdefault(stage, []).append((e["ts"], e["ts"] + e["dur"]))
    return {
        stage: round(sum(b - a for a, b in iv) / (max(b for _, b in iv) - min(a for a, _ in iv)), 3)
        for stage, iv in spans.items()
    }


def bench_config(settings: list[str]) -> PreprocessConfig:
    cfg = load_config(PreprocessConfig, None, SETTINGS + settings)
    if shutil.which("tesseract") is None:
        cfg.ocr.backend = None
    return cfg


def one_run(raw: str, settings: list[str], address: str | None) -> dict:
    import ray

    from easyanimate.preprocess.engine import iter_rows, run

    out = tempfile.mkdtemp(prefix="bench_pre_")
    cfg = bench_config(settings)
    cfg.engine.ray_address = address
    try:
        summary = run(raw, out, cfg)
        rows = list(iter_rows(out))
        slots = busy_slots(ray.timeline())
    finally:
        ray.shutdown()
        shutil.rmtree(out, ignore_errors=True)
    ops = {}
    for job, text in summary["stats"].items():
        ops.update({f"{job}: {k}": v for k, v in ray_throughput(text).items()})
    return {
        "videos": summary["videos_in"],
        "clips": summary["clips_in"],
        "wall_s": summary["wall_seconds"],
        "split_clips_per_s": steady([r["done_split"] for r in rows if r["file_path"]]),
        "filter_clips_per_s": steady([r["done_filter"] for r in rows if r["file_path"]]),
        "nodes_used": len(summary["tasks_by_node"]),
        "busy_slots": slots,
        "jobs_s": summary["jobs"],
        "ray_data_rows_per_s": ops,
    }


def _one_video(args: tuple) -> list[dict]:
    """plan -> split -> filters for one video in this process (the no-Ray reference)."""
    from easyanimate.preprocess import engine

    source, cfg, out = args
    windows = engine.plan_video({"video_id": engine.video_id(source), "source": source}, cfg)
    clips = [c for w in windows for c in engine.split_window(w, cfg, out)]
    return [engine.cpu_filters(c, cfg, out, "pool") for c in clips]


def pool_run(raw: str, workers: int) -> dict:
    """The same stage functions in a plain process pool, no Ray: what this machine gives 2 processes at all."""
    import multiprocessing
    import time

    from easyanimate.preprocess.storage import list_videos

    out = tempfile.mkdtemp(prefix="bench_pool_")
    cfg = bench_config([])
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        rows = [
            r for rs in pool.imap_unordered(_one_video, [(v, cfg, out) for v in list_videos(raw)]) for r in rs
        ]
    wall = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    done = [r["done_filter"] for r in rows if r["file_path"]]
    return {
        "videos": len({r["video_id"] for r in rows}),
        "clips": len(done),
        "wall_s": round(wall, 3),
        "pipeline_clips_per_s": steady(done),
    }


@contextlib.contextmanager
def cores(n: int):
    """This process and every process it starts meanwhile (Ray's raylet, workers, a `ray start` node, pool
    workers, tesseract) on the first `n` cores: a 1-worker run then has one core for everything, as a 1-CPU
    machine has, instead of leaving Ray's own processes the machine's second core (which made the 1-worker
    figures vary by +-25% between runs)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(sorted(before)[:n]))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--copies",
        type=int,
        default=16,
        help="copies of each synthetic raw video (16: every run over a minute)",
    )
    p.add_argument(
        "--scale", type=int, default=4, help="video size 128x96 x scale (4: about a second of work per clip)"
    )
    p.add_argument("--seconds", type=float, default=8.0, help="length of each synthetic raw video")
    p.add_argument("--skip-cluster", action="store_true", help="only the local 1 vs 2 worker runs")
    args = p.parse_args()
    from easyanimate.preprocess.cluster import LocalCluster

    raw = tempfile.mkdtemp(prefix="bench_raw_")
    made = make_raw_videos(os.path.join(raw, "base"), seconds=args.seconds, scale=args.scale)
    for name, path in made.items():
        if name != "corrupt":
            for k in range(args.copies):
                shutil.copy(path, os.path.join(raw, f"{name}_{k}.mp4"))
    shutil.rmtree(os.path.join(raw, "base"))
    rows = []
    for workers in (1, 2):
        with cores(workers):
            rows.append({"setup": f"no Ray: process pool, {workers} process(es)", **pool_run(raw, workers)})
        print(rows[-1], flush=True)
    for workers in (1, 2):  # a worker per CPU, as a cluster node has (capping tasks on 2 CPUs scaled worse)
        with cores(workers):
            row = one_run(raw, [f"engine.num_cpus={workers}"], None)
        rows.append({"setup": f"local Ray, {workers} CPU(s)", **row})
        print(rows[-1], flush=True)
    if not args.skip_cluster:
        for nodes in (1, 2):
            log_dir = tempfile.mkdtemp(prefix="bench_cluster_")
            with cores(nodes), LocalCluster(nodes=nodes, cpus=1, log_dir=log_dir) as address:
                row = one_run(raw, [], address)
            rows.append({"setup": f"cluster, {nodes} node(s) x 1 CPU", **row})
            print(rows[-1], flush=True)
    for a, b in ((0, 1), (2, 3), (4, 5)):
        if b < len(rows):
            for key in ("split_clips_per_s", "filter_clips_per_s", "pipeline_clips_per_s"):
                if key in rows[a]:
                    rows[b][key.replace("clips_per_s", "scaling")] = rows[b][key] / max(rows[a][key], 1e-9)
            rows[b]["wall_scaling"] = rows[a]["wall_s"] / rows[b]["wall_s"]  # start-up included
    shutil.rmtree(raw, ignore_errors=True)
    print(
        "\npreprocessing throughput, steady state (clips/s between the first and the last finished clip), CPU"
    )
    print_table(
        rows,
        [
            "setup",
            "videos",
            "clips",
            "wall_s",
            "pipeline_clips_per_s",
            "pipeline_scaling",
            "split_clips_per_s",
        ]
        + ["filter_clips_per_s", "split_scaling", "filter_scaling", "wall_scaling", "nodes_used"],
    )
    goal = (
        "steady-state scaling >= 1.6x from 1 to 2 workers and from 1 to 2 nodes (n workers: n cores for every "
        "process of the run)"
    )
    print(f"wrote {write_results('bench_preprocess', {'rows': rows, 'goal': goal})}")


if __name__ == "__main__":
    main()
