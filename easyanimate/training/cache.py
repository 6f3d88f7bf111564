"""Precomputed VAE latents and text features, so small runs and repeated epochs skip encoding.

`precompute(cfg)` writes, for every record at the shape its bucket gives it (centre crop, the first frame
window), the VAE posterior (mean, std: training still samples from it) and the caption's features, one
safetensors file per record, plus the features of the empty caption (for caption dropout) and a manifest of
the settings the cache depends on. Training with `latent_cache=<dir>` reads these instead of pixels; a cache
made with other settings is refused. The cache depends on the pipeline's VAE, text encoder and tokenizer, not on
where the pipeline lies: a run that starts from another pipeline with the same encoders (each stage of a recipe
writes a new one) reuses the cache.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data.bucket import BucketBatchSampler
from ..data.datasets import SampleSpec, VideoDataset

MANIFEST = "manifest.json"
ENCODER_FOLDERS = ("vae", "text_encoder", "tokenizer")  # what the cached latents and features come from
_WHOLE_FILE = 4 << 20  # files up to this size are hashed whole; larger ones by size, head and tail
# top-level JSON keys that say where and how a folder was loaded or saved, not what it computes (a re-saved
# tokenizer also records the padding / truncation it was last called with; the text encoder sets them per call)
_LOAD_STATE_KEYS = (
    "_name_or_path",
    "_diffusers_version",
    "transformers_version",
    "_commit_hash",
    "is_local",
    "local_files_only",
    "padding",
    "truncation",
    "max_length",  # a tokenizer called with these arguments saves them with itself; each call sets its own
    "stride",
    "pad_to_multiple_of",
    "pad_token_type_id",
    "truncation_strategy",
)
_DEFAULT_KEYS = {"padding_side": "right", "truncation_side": "right"}  # the same as absent


def _file_identity(path: str) -> str:
    """A checksum of a file, cheap for multi-GB weights: whole up to 4 MiB, else its size and first and last
    4 MiB (a safetensors header names every tensor's shape and offset, and retraining a whole model changes both
    ends; a change confined to the middle of a larger file, e.g. a few inner blocks fine-tuned, goes unseen).
    JSON files are compared by content without the keys of `_LOAD_STATE_KEYS`."""
    if path.endswith(".json"):
        with open(path) as fh:
            content = json.load(fh)
        if isinstance(content, dict):
            content = {
                k: v
                for k, v in content.items()
                if k not in _LOAD_STATE_KEYS and _DEFAULT_KEYS.get(k, object()) != v
            }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        if size <= _WHOLE_FILE:
            digest.update(fh.read())
        else:
            digest.update(fh.read(_WHOLE_FILE))
            fh.seek(size - _WHOLE_FILE)
            digest.update(fh.read())
    return digest.hexdigest()


def encoders_identity(pipeline: str) -> str:
    """One checksum over the files of the pipeline's `vae/`, `text_encoder/` and `tokenizer/` folders."""
    digest = hashlib.sha256()
    for folder in ENCODER_FOLDERS:
        root = os.path.join(pipeline, folder)
        for base, dirs, files in sorted(os.walk(root)):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(base, name)
                digest.update(f"{os.path.relpath(path, pipeline)}={_file_identity(path)};".encode())
    return digest.hexdigest()


def cache_key(cfg, data_kind: str) -> dict:
    """The settings a cache depends on; training checks them against its own."""
    d = cfg.data
    return {
        "data_kind": data_kind,
        "encoders": encoders_identity(cfg.model.pipeline),
        "format": d.format,
        "meta": os.path.abspath(d.meta) if d.meta else None,
        "root": os.path.abspath(d.root) if d.root else None,
        "base_size": d.base_size,
        "num_frames": d.num_frames,
        "token_length": d.token_length,
        "token_base_frames": d.token_base_frames,
        "max_frames": d.max_frames,
        "frame_stride": d.frame_stride,
        "max_text_length": cfg.model.max_text_length,
    }


@torch.no_grad()
def precompute(
    cfg, data_kind: str, records, sampler: BucketBatchSampler, vae, text_encoder, cache_dir: str
) -> int:
    """Encode every record once; returns how many were written (bad files are skipped and counted)."""
    os.makedirs(cache_dir, exist_ok=True)
    dataset = VideoDataset(records, frame_stride=cfg.data.frame_stride, random_crop=False, seed=cfg.seed)
    specs = {i: SampleSpec(i, h, w, f) for (_, h, w, f), ix in sampler.groups.items() for i in ix}
    param = next(vae.parameters())
    written = 0
    for i in tqdm(sorted(specs), desc="precompute", disable=len(specs) < 20):
        sample = dataset[specs[i]]
        if sample["index"] != i:  # the record was unreadable and replaced: leave it out of the cache
            continue
        posterior = vae.encode(sample["pixels"][None].to(param.device, param.dtype)).latent_dist
        features, mask = text_encoder([sample["text"]])
        tensors = {
            "mean": posterior.mean[0],
            "std": posterior.std[0],
            "text": features[0],
            "text_mask": mask[0],
        }
        save_file(
            {k: v.float().cpu().contiguous() for k, v in tensors.items()},
            os.path.join(cache_dir, f"{i:08d}.safetensors"),
        )
        written += 1
    features, mask = text_encoder([""])
    save_file(
        {"text": features[0].float().cpu(), "text_mask": mask[0].float().cpu()},
        os.path.join(cache_dir, "empty.safetensors"),
    )
    with open(os.path.join(cache_dir, MANIFEST), "w") as fh:
        json.dump({**cache_key(cfg, data_kind), "records": written, "skipped": dataset.skipped}, fh, indent=2)
    return written


class CachedLatents(Dataset):
    """Reads the cache; caption dropout swaps in the empty caption's features. With `captions` (one per
    record) items also carry the caption text, for runs that encode text themselves (a text encoder that
    trains)."""

    def __init__(self, cache_dir: str, cfg, data_kind: str, captions: list[str] | None = None):
        path = os.path.join(cache_dir, MANIFEST)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no latent cache at {cache_dir} (run scripts/precompute.py first)")
        with open(path) as fh:
            manifest = json.load(fh)
        expected = cache_key(cfg, data_kind)
        if "encoders" not in manifest and manifest.get("pipeline") == os.path.abspath(cfg.model.pipeline):
            # made before caches were keyed on the encoders: the same pipeline folder, taken as it was then
            manifest["encoders"] = expected["encoders"]
        diff = {k: (manifest.get(k), v) for k, v in expected.items() if manifest.get(k) != v}
        if diff:
            raise ValueError(
                f"latent cache {cache_dir} was made with other settings (cache, run): {diff}; make a new one "
                "with scripts/precompute.py"
            )
        self.dir, self.seed, self.epoch, self.dropout = cache_dir, cfg.seed, 0, cfg.data.caption_dropout
        self.empty = load_file(os.path.join(cache_dir, "empty.safetensors"))
        self.captions = captions

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len([n for n in os.listdir(self.dir) if n[:8].isdigit()])

    def __getitem__(self, spec: SampleSpec) -> dict:
        path = os.path.join(self.dir, f"{spec.index:08d}.safetensors")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"record {spec.index} is not in the latent cache (unreadable when precomputed?)"
            )
        item = load_file(path)
        drop = np.random.default_rng([self.seed, self.epoch, spec.index, 99]).random() < self.dropout
        if drop:
            item["text"], item["text_mask"] = self.empty["text"], self.empty["text_mask"]
        if self.captions is not None:
            item["caption"] = "" if drop else self.captions[spec.index]
        return {**item, "index": spec.index}


def collate_cached(samples: list[dict]) -> dict:
    out = {k: torch.stack([s[k] for s in samples]) for k in ("mean", "std", "text", "text_mask")}
    if "caption" in samples[0]:
        out["captions"] = [s["caption"] for s in samples]
    return {**out, "index": [s["index"] for s in samples], "skipped": []}


def precompute_run(cfg) -> tuple[int, int]:
    """What `scripts/precompute.py` does: the run's records at its buckets, through its pipeline's VAE and
    text encoder, into `cfg.data.latent_cache`. Returns (written, records)."""
    from ..models.loading import transformer_patch_size
    from ..models.slice_vae import SliceVAE
    from ..models.text_encoder import load_text_encoder
    from .data import build_data, run_size_factor
    from .strategies import strategy_of

    kind = strategy_of(cfg).data
    vae = SliceVAE.from_pretrained(os.path.join(cfg.model.pipeline, "vae")).eval()
    patch = transformer_patch_size(cfg.model.transformer_source, **cfg.model.transformer_options)
    shape = vae.shape_rule.with_patch(patch * run_size_factor(cfg))  # the trainer's buckets
    records, sampler = build_data(cfg, kind, shape)
    text = load_text_encoder(cfg.model.pipeline, max_length=cfg.model.max_text_length)
    return precompute(cfg, kind, records, sampler, vae, text, cfg.data.latent_cache), len(records)
