"""Preprocessing throughput per stage with 1 and 2 Ray workers (clips per second), on synthetic raw videos.

CPU stages (split, basic / quality / motion filters) run as Ray tasks; the scaling ratio of 2 workers over 1
is the figure of merit (goal >= 1.6x on 2 cores). Wall time excludes Ray's start-up; stage times come from the
engine's per-clip timings.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, write_results  # noqa: E402

from easyanimate.config import load_config  # noqa: E402
from easyanimate.data.synthetic_raw import make_raw_videos  # noqa: E402
from easyanimate.preprocess.config import PreprocessConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--copies", type=int, default=12, help="copies of each synthetic raw video")
    args = p.parse_args()
    import ray

    from easyanimate.preprocess.engine import run

    raw = tempfile.mkdtemp(prefix="bench_raw_")
    made = make_raw_videos(os.path.join(raw, "base"), seconds=6.0)
    for name, path in made.items():
        if name == "corrupt":
            continue
        for k in range(args.copies):
            shutil.copy(path, os.path.join(raw, f"{name}_{k}.mp4"))
    shutil.rmtree(os.path.join(raw, "base"))
    rows = []
    for workers in (1, 2):
        out = tempfile.mkdtemp(prefix="bench_pre_")
        cfg = load_config(
            PreprocessConfig,
            None,
            ["split.min_seconds=1.5", "motion.min_motion=0.5", "motion.max_motion=12", "ocr.backend=null"]
            + [
                f"engine.cpu_concurrency={workers}",
                "engine.num_cpus=2",
                "basic.min_width=64",
                "basic.min_height=64",
            ],
        )
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # start-up is not stage work
        start = time.perf_counter()
        summary = run(raw, out, cfg)
        wall = time.perf_counter() - start
        ray.shutdown()
        rows.append(
            {
                "workers": workers,
                "videos": summary["videos_in"],
                "clips": summary["clips_in"],
                "wall_s": wall,
                "clips_per_s": summary["clips_in"] / wall,
                **{
                    f"cpu_s_{k}": v
                    for k, v in summary["seconds_per_stage"].items()
                    if k in ("split", "quality", "motion")
                },
            }
        )
        print(rows[-1], flush=True)
    rows[1]["scaling"] = rows[1]["clips_per_s"] / rows[0]["clips_per_s"]
    print(
        "\npreprocessing on synthetic raw videos (split + basic/quality/motion filters; OCR and captions off), CPU"
    )
    print_table(
        rows,
        [
            "workers",
            "videos",
            "clips",
            "wall_s",
            "clips_per_s",
            "cpu_s_split",
            "cpu_s_quality",
            "cpu_s_motion",
            "scaling",
        ],
    )
    print(f"wrote {write_results('bench_preprocess', {'rows': rows, 'goal': 'scaling >= 1.6 on 2 cores'})}")


if __name__ == "__main__":
    main()
