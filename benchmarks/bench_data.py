"""Data loading: samples/s with 0 and 2 workers, and padding with vs without aspect-ratio buckets.

1. Throughput: the synthetic shapes dataset (64x64 videos of 17 frames + images), VideoDataset + bucket
   sampler, batches of 4, one epoch per setting.
2. Padding: a mixed-ratio dataset (sizes from 1:2 to 2:1). Without buckets, each item is scaled to the base
   area at its own ratio and a batch is padded to its largest height and width; with buckets every batch has
   one shape (padding 0 by construction) and the cost moves to cropping, reported as the share cropped away.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, write_results  # noqa: E402

from easyanimate.data.bucket import BucketBatchSampler, aspect_ratio_buckets, nearest_bucket  # noqa: E402
from easyanimate.data.datasets import VideoDataset, collate  # noqa: E402
from easyanimate.data.formats import Record, load_records  # noqa: E402
from easyanimate.data.synthetic import generate  # noqa: E402


def throughput(root: str, workers: int, base: int) -> dict:
    records = load_records("normal", os.path.join(root, "metadata.json"))
    sampler = BucketBatchSampler(records, batch_size=4, base_size=base, num_frames=17, seed=0)
    loader = DataLoader(VideoDataset(records), batch_sampler=sampler, collate_fn=collate, num_workers=workers)
    start = time.perf_counter()
    n = sum(batch["pixels"].shape[0] for batch in loader)
    seconds = time.perf_counter() - start
    return {"workers": workers, "samples": n, "seconds": seconds, "samples_per_s": n / seconds}


def padding(num_items: int, batch_size: int, base: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ratios = np.exp(rng.uniform(math.log(0.5), math.log(2.0), num_items))  # height / width
    sizes = [(int(base * math.sqrt(r)), int(base / math.sqrt(r))) for r in ratios]
    # without buckets: native ratio at the base area (multiples of 16), padded to the batch maximum
    native = [(max(16, round(h / 16) * 16), max(16, round(w / 16) * 16)) for h, w in sizes]
    order = rng.permutation(num_items)
    content = padded = 0
    for s in range(0, num_items - batch_size + 1, batch_size):
        batch = [native[i] for i in order[s : s + batch_size]]
        mh, mw = max(h for h, _ in batch), max(w for _, w in batch)
        content += sum(h * w for h, w in batch)
        padded += mh * mw * len(batch)
    # with buckets: every batch one shape; the image is scaled to cover its bucket and cropped
    buckets = aspect_ratio_buckets(base)
    records = [Record(f"{i}.png", "", "image", width=w, height=h) for i, (h, w) in enumerate(sizes)]
    sampler = BucketBatchSampler(records, batch_size, base_size=base, sizes=sizes)
    shapes_ok = all(len({(s.height, s.width) for s in b}) == 1 for b in sampler)
    cropped = []
    for h, w in sizes:
        bh, bw = nearest_bucket(h, w, buckets)
        scale = max(bh / h, bw / w)
        cropped.append(1 - (bh * bw) / (h * scale * w * scale))
    return {
        "padding_fraction_without_buckets": 1 - content / padded,
        "padding_fraction_with_buckets": 0.0 if shapes_ok else float("nan"),
        "mean_crop_fraction_with_buckets": float(np.mean(cropped)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--videos", type=int, default=160)
    p.add_argument("--images", type=int, default=80)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.videos, args.images = 8, 4
    root = tempfile.mkdtemp(prefix="bench_data_")
    generate(root, args.videos, args.images, size=64, frames=17, seed=0)
    rows = [throughput(root, w, base=64) for w in (0, 2)]
    rows[1]["speedup"] = rows[1]["samples_per_s"] / rows[0]["samples_per_s"]
    print(f"\nloader throughput: {args.videos} videos (17 x 64x64) + {args.images} images, batch 4, CPU")
    print_table(rows, ["workers", "samples", "seconds", "samples_per_s", "speedup"])
    pad = padding(num_items=2000, batch_size=8, base=512)
    print("\npadding on 2,000 items with height/width ratios in [1/2, 2], base 512, batch 8")
    print_table([pad], list(pad))
    path = write_results(
        "bench_data" + ("_quick" if args.quick else ""), {"throughput": rows, "padding": pad}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
