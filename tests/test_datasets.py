"""Datasets in three formats, frame sampling, bad-file handling, buckets, token lengths, sampler, masks."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from easyanimate.config import from_dict
from easyanimate.data.bucket import BucketBatchSampler, TokenLengthRule, aspect_ratio_buckets, nearest_bucket
from easyanimate.data.datasets import SampleSpec, VideoDataset, collate, frame_indices
from easyanimate.data.formats import MetadataError, Record, load_records
from easyanimate.data.masks import MaskConfig, sample_mask
from easyanimate.data.video_io import write_video


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory) -> str:
    """40 frames whose brightness encodes the frame index (index * 6)."""
    frames = np.stack([np.full((32, 48, 3), i * 6, np.uint8) for i in range(40)])
    return write_video(str(tmp_path_factory.mktemp("counter") / "count.mp4"), frames)


def test_normal_format_json_jsonl_csv(tmp_path, shapes_dir):
    records = load_records("normal", os.path.join(shapes_dir, "metadata.json"))
    assert len(records) == 12 and all(os.path.isfile(r.path) for r in records)
    assert {r.type for r in records} == {"image", "video"} and records[0].num_frames == 9
    assert records[0].extra["color"] in records[0].text  # extra fields are kept
    items = json.load(open(os.path.join(shapes_dir, "metadata.json")))
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(i) for i in items) + "\n")
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file_path", "text", "type"])
        w.writeheader()
        for i in items:
            w.writerow({k: i[k] for k in ("file_path", "text", "type")})
    for name in ("m.jsonl", "m.csv"):
        other = load_records("normal", str(tmp_path / name), root=shapes_dir)
        assert [(r.path, r.text, r.type) for r in other] == [(r.path, r.text, r.type) for r in records]


def test_webvid_and_diffusers_formats(tmp_path, shapes_dir):
    items = json.load(open(os.path.join(shapes_dir, "metadata.json")))
    videos = [i for i in items if i["type"] == "video"]
    os.makedirs(tmp_path / "webvid" / "part0")
    with open(tmp_path / "webvid.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["videoid", "contentUrl", "duration", "page_dir", "name"])
        w.writeheader()
        for n, v in enumerate(videos):
            shutil.copy(os.path.join(shapes_dir, v["file_path"]), tmp_path / "webvid" / "part0" / f"{n}.mp4")
            w.writerow(
                {
                    "videoid": n,
                    "contentUrl": "",
                    "duration": "PT00H00M02S",
                    "page_dir": "part0",
                    "name": v["text"],
                }
            )
    web = load_records("webvid", str(tmp_path / "webvid.csv"), str(tmp_path / "webvid"))
    assert len(web) == len(videos) and web[1].text == videos[1]["text"] and os.path.isfile(web[1].path)
    images = [i for i in items if i["type"] == "image"]
    os.makedirs(tmp_path / "diff" / "train")
    with open(tmp_path / "diff" / "train" / "metadata.jsonl", "w") as fh:
        for i in images:
            name = os.path.basename(i["file_path"])
            shutil.copy(os.path.join(shapes_dir, i["file_path"]), tmp_path / "diff" / "train" / name)
            fh.write(json.dumps({"file_name": name, "text": i["text"]}) + "\n")
    diff = load_records("diffusers", None, str(tmp_path / "diff"))
    assert len(diff) == len(images) and all(r.type == "image" and os.path.isfile(r.path) for r in diff)
    ds = VideoDataset(web + diff, height=32, width=32, num_frames=5)
    assert ds[0]["pixels"].shape == (3, 5, 32, 32) and ds[len(web)]["pixels"].shape == (3, 1, 32, 32)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("a.json", '[{"file_path": "x.mp4", "text": "ok"}, {"file_path": "y.mp4"}]', None),
        ("b.json", '[{"file_path": "x.mp4", "text": 3}]', r"b.json: item 0: field 'text' must be a string"),
        ("c.json", '[{"text": "no path"}]', r"c.json: item 0: field 'file_path' is missing"),
        ("d.jsonl", '{"file_path": "x.mp4", "text": "a"}\n{oops\n', r"d.jsonl: line 2: not valid JSON"),
        (
            "e.csv",
            "file_path,text,width\nx.mp4,a,wide\n",
            r"e.csv: item 0 \(line 2\): field 'width' must be an integer",
        ),
        ("f.json", '{"file_path": "x.mp4"}', r"f.json: expected a JSON list"),
        ("g.json", '[{"file_path": "x.txt", "text": "a"}]', r"g.json: item 0: field 'type' must be"),
    ],
)
def test_malformed_metadata_names_file_item_and_field(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    if message is None:  # text is optional (empty caption)
        assert load_records("normal", str(tmp_path / name))[1].text == ""
        return
    with pytest.raises(MetadataError, match=message):
        load_records("normal", str(tmp_path / name))


def test_frames_count_order_stride_window_and_range(counter_video):
    record = Record(counter_video, "count", "video")
    ds = VideoDataset([record], height=32, width=32, num_frames=9, frame_stride=2, random_crop=False)
    pixels = ds[0]["pixels"]
    assert pixels.shape == (3, 9, 32, 32) and pixels.min() >= -1 and pixels.max() <= 1
    index = ((pixels.mean(dim=(0, 2, 3)) + 1) * 127.5 / 6).round().int().tolist()
    assert index == list(range(index[0], index[0] + 18, 2))  # in order, stride 2
    assert 4 <= index[0] and index[-1] < 36  # inside the window without the first/last 10%
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = frame_indices(40, 9, 2, 0.1, rng)
        assert idx[0] >= 4 and idx[-1] < 36
    assert frame_indices(12, 9, 1, 0.1, None) == list(range(1, 10))  # window too short: whole video


def test_bad_files_are_skipped_and_counted(tmp_path, counter_video):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "corrupt.mp4").write_bytes(os.urandom(2000))
    short = write_video(str(tmp_path / "short.mp4"), np.zeros((3, 32, 32, 3), np.uint8))
    records = [Record(str(tmp_path / p), "x", "video") for p in ("missing.mp4", "empty.mp4", "corrupt.mp4")]
    records += [Record(short, "x", "video"), Record(counter_video, "good", "video")]
    ds = VideoDataset(records, height=32, width=32, num_frames=9)
    for i in range(4):
        sample = ds[i]
        assert sample["text"] == "good" and sample["skipped"]
    assert ds.num_skipped == 4 and "too short" in ds.skipped[short]


def test_buckets_give_single_shape_batches_without_padding(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for n in range(40):
        h, w = [(64, 64), (48, 96), (96, 48), (64, 112)][n % 4]
        path = tmp_path / f"{n}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        records.append(Record(str(path), f"img {n}", "image"))
    sampler = BucketBatchSampler(records, batch_size=4, base_size=64, seed=0)
    loader = DataLoader(VideoDataset(records), batch_sampler=sampler, collate_fn=collate)
    shapes = set()
    for batch in loader:
        b, c, f, h, w = batch["pixels"].shape
        assert (b, c, f) == (4, 3, 1)
        shapes.add((h, w))
    assert len(shapes) >= 3  # several aspect ratios, each batch one of them
    assert all(h % 16 == 0 and w % 16 == 0 for h, w in shapes)
    buckets = aspect_ratio_buckets(512)
    assert buckets[1.0] == (512, 512) and nearest_bucket(720, 1280, buckets) == buckets[0.57]


def test_token_length_rule():
    rule = TokenLengthRule(base_size=512, base_frames=49)
    assert rule.token_budget == 13312
    assert [rule.frames_for(s, s) for s in (512, 768, 1024)] == [49, 21, 9]
    assert TokenLengthRule(max_frames=97).frames_for(256, 256) == 97


def _video_records(n):
    return [Record(f"v{i}.mp4", "t", "video", width=64, height=64) for i in range(n)]


def test_sampler_determinism_sharding_and_resume():
    records = _video_records(50)
    a = [[s.index for s in b] for b in BucketBatchSampler(records, 4, base_size=64, seed=1)]
    b = [[s.index for s in b] for b in BucketBatchSampler(records, 4, base_size=64, seed=1)]
    assert a == b and len(a) == 12
    later = BucketBatchSampler(records, 4, base_size=64, seed=1)
    later.set_epoch(1)
    assert [[s.index for s in b] for b in later] != a
    shards = [
        [
            s.index
            for b in BucketBatchSampler(records, 4, base_size=64, seed=1, num_replicas=2, rank=r)
            for s in b
        ]
        for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 24 and not set(shards[0]) & set(shards[1])
    # resume: stop after 5 batches, restore into a fresh sampler, get exactly the rest
    first = BucketBatchSampler(records, 4, base_size=64, seed=1)
    it = iter(first)
    seen = [[s.index for s in next(it)] for _ in range(5)]
    state = first.state_dict()
    resumed = BucketBatchSampler(records, 4, base_size=64, seed=1)
    resumed.load_state_dict(state)
    assert seen + [[s.index for s in b] for b in resumed] == a
    with pytest.raises(ValueError, match="seed"):
        BucketBatchSampler(records, 4, seed=2).load_state_dict(state)


def test_token_rule_sets_frames_per_bucket():
    records = [
        Record(f"v{i}.mp4", "t", "video", width=w, height=h)
        for i, (h, w) in enumerate([(512, 512), (768, 768)] * 4)
    ]
    sampler = BucketBatchSampler(
        records, 2, base_size=512, token_rule=TokenLengthRule(), sizes=[(r.height, r.width) for r in records]
    )
    frames = {(s.height, s.num_frames) for batch in sampler for s in batch}
    assert (512, 49) in frames and all(f == 49 for h, f in frames if h == 512)


def test_mask_generator_statistics_and_shapes():
    config = MaskConfig()
    rng = np.random.default_rng(0)
    counts: dict[str, int] = {}
    n = 3000
    for _ in range(n):
        mask, kind = sample_mask(9, 16, 16, rng, config)
        counts[kind] = counts.get(kind, 0) + 1
        assert mask.shape == (1, 9, 16, 16)
        if kind == "first":
            assert mask[:, 0].max() == 0 and mask[:, 1:].min() == 1
        elif kind == "first_last":
            assert mask[:, [0, -1]].max() == 0 and mask[:, 1:-1].min() == 1
        elif kind == "head":
            kept = (mask.flatten(2).max(-1).values == 0).sum().item()
            assert 1 <= kept <= 8 and mask[:, kept:].min() == 1
        elif kind == "boxes":
            assert 0 < mask.mean() < 1 and (mask[:, 0] == mask[:, -1]).all()
        elif kind == "all":
            assert mask.min() == 1
        elif kind == "none":
            assert mask.max() == 0
    for kind, p in config.video.items():
        assert abs(counts.get(kind, 0) / n - p) < 0.03, (kind, counts)
    image_masks = [sample_mask(1, 8, 8, rng, config)[1] for _ in range(1000)]
    assert abs(image_masks.count("image_mask") / 1000 - 0.5) < 0.05
    with pytest.raises(ValueError, match="unknown config key sideways"):
        from_dict(MaskConfig, {"sideways": 1.0})


def test_caption_dropout(counter_video):
    ds = VideoDataset([Record(counter_video, "caption", "video")] * 400, 32, 32, 5, caption_dropout=0.3)
    dropped = sum(ds[SampleSpec(i, 32, 32, 1)]["text"] == "" for i in range(400))
    assert 0.22 < dropped / 400 < 0.38


@pytest.mark.parametrize("accumulation", [1, 2])
def test_ranks_share_each_steps_bucket(accumulation):
    """Every optimizer step (`accumulation` micro-batches) has one media kind and shape on all ranks; the ranks'
    items stay disjoint, and a resumed rank continues exactly."""
    rng = np.random.default_rng(0)
    records = [Record(f"v{i}.mp4", "v", "video", height=64, width=64 * (1 + i % 2)) for i in range(40)]
    records += [Record(f"i{i}.png", "i", "image", height=64, width=64) for i in range(24)]
    rng.shuffle(records)
    ranks = [
        list(
            BucketBatchSampler(
                records, 2, base_size=64, seed=3, num_replicas=2, rank=r, batches_per_step=accumulation
            )
        )
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) > 0 and len(ranks[0]) % accumulation == 0
    shape = lambda batch: (records[batch[0].index].type, batch[0].height, batch[0].width, batch[0].num_frames)  # noqa: E731
    for step in range(0, len(ranks[0]), accumulation):
        shapes = {shape(b) for r in ranks for b in r[step : step + accumulation]}
        assert len(shapes) == 1, (step, shapes)
    kinds = {shape(b)[0] for b in ranks[0]}
    assert kinds == {"image", "video"}  # both kinds still train, step by step
    items = [{s.index for b in r for s in b} for r in ranks]
    assert not items[0] & items[1]
    sampler = BucketBatchSampler(
        records, 2, base_size=64, seed=3, num_replicas=2, rank=1, batches_per_step=accumulation
    )
    it = iter(sampler)
    next(it)
    resumed = BucketBatchSampler(
        records, 2, base_size=64, seed=3, num_replicas=2, rank=1, batches_per_step=accumulation
    )
    resumed.load_state_dict(sampler.state_dict())
    assert [[s.index for s in b] for b in resumed] == [[s.index for s in b] for b in ranks[1][1:]]


def test_balanced_scenes_cover_every_look_in_every_direction():
    import itertools

    import numpy as np

    from easyanimate.data.synthetic import BACKGROUNDS, COLORS, DIRECTIONS, SHAPES, balanced_scenes

    combos = len(COLORS) * len(SHAPES) * len(BACKGROUNDS) * len(DIRECTIONS)
    scenes = balanced_scenes(2 * combos + 7, np.random.default_rng(0))
    counts = {k: 0 for k in itertools.product(SHAPES, COLORS, DIRECTIONS, BACKGROUNDS)}
    for s in scenes:
        counts[(s.shape, s.color, s.direction, s.background)] += 1
    assert set(counts.values()) <= {2, 3} and sum(v == 3 for v in counts.values()) == 7
    images = balanced_scenes(
        len(COLORS) * len(SHAPES) * len(BACKGROUNDS), np.random.default_rng(0), video=False
    )
    assert {s.direction for s in images} == {"still"} and len(set(images)) == len(images)
