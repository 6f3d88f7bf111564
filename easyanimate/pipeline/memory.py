"""GPU memory modes (diffusers' own offload and casting hooks) and a peak-memory estimator.

Modes (`--gpu-memory-mode`):
- none: everything on the device;
- model_cpu_offload: each model moves to the device only while it runs (text encoder, transformer, VAE);
- model_cpu_offload_and_qfloat8: model offload, and the transformer's weights stored in float8 (e4m3), cast to
  the compute dtype one layer at a time (diffusers' layerwise casting);
- qfloat8: float8 weight storage for the transformer, everything on the device;
- group_offload: groups of blocks move to the device as they run (diffusers' group offloading), between model
  and sequential offload in memory and speed;
- sequential_cpu_offload: layer by layer (slowest, least memory).

`storage_dtype` ("float8_e4m3fn", "float8_e5m2", "bfloat16") stores the transformer's weights in that dtype with
any mode (layerwise casting). On a CPU-only machine the offload modes install the same hooks with the CPU as the
execution device: they then save nothing, but the tests run every mode end to end that way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..models.shape_rule import ShapeRule
from ..models.slice_vae import DEFAULT_DECODE_SLICE_LATENTS

logger = logging.getLogger(__name__)

MEMORY_MODES = (
    "none",
    "model_cpu_offload",
    "model_cpu_offload_and_qfloat8",
    "qfloat8",
    "group_offload",
    "sequential_cpu_offload",
)
STORAGE_DTYPES = {
    "float8_e4m3fn": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
    "bfloat16": torch.bfloat16,
}


def store_weights(pipe, storage_dtype: str) -> None:
    """The transformer's weights stored in `storage_dtype`, cast to its compute dtype per layer as it runs
    (diffusers' `enable_layerwise_casting`; norms, embeddings and the patch / output projections stay as they
    are)."""
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"unknown storage dtype {storage_dtype!r}; choose from {list(STORAGE_DTYPES)}")
    for transformer in (pipe.transformer, getattr(pipe, "transformer_2", None)):  # both experts, when two
        if transformer is not None:
            transformer.enable_layerwise_casting(
                storage_dtype=STORAGE_DTYPES[storage_dtype], compute_dtype=transformer.dtype
            )


def apply_memory_mode(
    pipe, mode: str, device: str | torch.device = "cuda", storage_dtype: str | None = None
) -> None:
    """Put `pipe` on `device` in a memory mode (`MEMORY_MODES`), its transformer stored in `storage_dtype`."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"unknown GPU memory mode {mode!r}; choose from {MEMORY_MODES}")
    device = torch.device(device)
    if mode in ("model_cpu_offload_and_qfloat8", "qfloat8"):
        storage_dtype = storage_dtype or "float8_e4m3fn"
    if storage_dtype:
        store_weights(pipe, storage_dtype)
    if mode != "none" and device.type == "cpu":
        logger.info("%s on a CPU device installs its hooks but saves no memory", mode)
    if mode in ("none", "qfloat8"):
        pipe.to(device)
    elif mode == "sequential_cpu_offload":
        # one leaf layer at a time, through diffusers' group-offloading hooks at leaf level: the weights stay in
        # CPU memory. (diffusers' enable_sequential_cpu_offload, on accelerate's hooks, breaks T5's tied input
        # embedding when the execution device is the CPU, so it cannot be tested here.)
        pipe.enable_group_offload(onload_device=device, offload_type="leaf_level")
    elif mode == "group_offload":
        # block-level groups (one transformer / T5 / VAE block at a time): diffusers' group offloading
        pipe.enable_group_offload(onload_device=device, num_blocks_per_group=1)
    else:
        pipe.enable_model_cpu_offload(device=device)


# ------------------------------------------------------------------------------------------------ estimator

# Activation bytes per element of (tokens x width) at the transformer's peak: hidden states, the 4x GEGLU/GELU
# feed-forward, attention in/out with memory-efficient SDPA. An estimate, not a measurement.
TRANSFORMER_ACT_FACTOR = 12
# VAE decode: bytes per decoded output pixel-frame of one slice, per byte of dtype. Measured on CPU for
# slice-4ch: 787 MB peak beyond the output at 128x128 with 4-frame slices in fp32 (benchmarks/bench_vae.py).
VAE_DECODE_BYTES_PER_PIXEL_FRAME = 787 * 2**20 / (4 * 128 * 128 * 4)


@dataclass
class MemoryEstimate:
    text_encoder_gb: float
    transformer_gb: float
    vae_gb: float
    transformer_activations_gb: float
    vae_decode_gb: float
    peak_gb: float
    mode: str


def estimate_peak_memory(
    transformer_params: float,
    height: int,
    width: int,
    num_frames: int,
    mode: str = "none",
    width_dim: int = 1152,
    text_encoder_params: float = 4.76e9,  # T5-XXL encoder (PixArt-alpha)
    vae_params: float = 0.25e9,
    dtype_bytes: int = 2,
    cfg: bool = True,
    decode_slice_latents: int = DEFAULT_DECODE_SLICE_LATENTS,  # the VAE's own default slice
    linear_share: float = 0.95,  # share of transformer parameters in linear weights (fp8 mode)
    rule: ShapeRule | None = None,  # the model's frame / size rule (`pipe.shape_rule`); None: 1 + 4k, 16 px
    vae_channels: int = 128,  # the VAE decoder's full-resolution channels (the measured VAE's: 128)
) -> MemoryEstimate:
    """Predicted peak GPU memory (GB) of one generation.

    Weights at `dtype_bytes`; transformer activations from the token count (2x with CFG); VAE decode from the
    measured per-pixel cost of one slice. Offload modes keep one model resident at a time.
    """
    if mode not in MEMORY_MODES:
        raise ValueError(f"unknown GPU memory mode {mode!r}; choose from {MEMORY_MODES}")
    gb = 1 / 2**30
    rule = rule or ShapeRule()
    tokens_per_frame = (height // rule.size_multiple) * (width // rule.size_multiple)
    tokens = (2 if cfg else 1) * rule.latent_frames(num_frames) * tokens_per_frame
    te = text_encoder_params * dtype_bytes * gb
    tr_bytes = transformer_params * dtype_bytes
    if mode in ("model_cpu_offload_and_qfloat8", "qfloat8"):
        tr_bytes = transformer_params * (linear_share * 1 + (1 - linear_share) * dtype_bytes)
    tr = tr_bytes * gb
    vae = vae_params * dtype_bytes * gb
    act = tokens * width_dim * TRANSFORMER_ACT_FACTOR * dtype_bytes * gb
    decode = (
        VAE_DECODE_BYTES_PER_PIXEL_FRAME
        * vae_channels
        / 128
        * (rule.temporal_ratio * decode_slice_latents)
        * height
        * width
        * dtype_bytes
        * gb
    )
    if mode in ("none", "qfloat8"):
        peak = te + tr + vae + max(act, decode)
    elif mode in ("sequential_cpu_offload", "group_offload"):
        largest_layer = 0.05 * max(te, tr)  # a transformer block / T5 layer is a few % of its model
        peak = largest_layer + max(act, decode)
    else:
        peak = max(te, tr + act, vae + decode)
    return MemoryEstimate(te, tr, vae, act, decode, peak, mode)


def _params(module) -> float:
    return float(sum(p.numel() for p in module.parameters())) if module is not None else 0.0


def estimate_for_pipeline(
    pipe, height: int, width: int, num_frames: int, mode: str = "none", cfg: bool = True
) -> MemoryEstimate:
    """`estimate_peak_memory` with this pipeline's own sizes: parameter counts, width, dtype, frame rule and
    its VAE's decoder channels (the demo VAE's 16 need an eighth of the measured 128-channel VAE's memory)."""
    t, vae = pipe.transformer, pipe.vae
    config = vae.config
    top = (config.get("block_out_channels") or [config.get("ch", 128) * (config.get("ch_mult") or [1])[0]])[0]
    # two experts: both counted (model offload holds one at a time, so this errs high there)
    transformer_params = _params(t) + _params(getattr(pipe, "transformer_2", None))
    return estimate_peak_memory(
        transformer_params,
        height,
        width,
        num_frames,
        mode,
        width_dim=t.config.num_attention_heads * t.config.attention_head_dim,
        text_encoder_params=_params(pipe.text_encoder),
        vae_params=_params(vae),
        dtype_bytes=t.dtype.itemsize,
        cfg=cfg,
        decode_slice_latents=getattr(vae, "decode_slice_latents", DEFAULT_DECODE_SLICE_LATENTS),
        rule=pipe.shape_rule,
        vae_channels=int(top),
    )


def free_memory_bytes(device: str | torch.device) -> int:
    """Free memory where a generation runs: the GPU's free memory, or the machine's available RAM on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(
    pipe,
    height: int,
    width: int,
    num_frames: int,
    mode: str,
    device,
    cfg: bool = True,
    output_frames: int = 0,
) -> None:
    """Refuse a request whose estimated peak memory exceeds what is free, with both numbers (a 4096x4096 video
    would otherwise run until the machine kills it). `output_frames`: a long video's total, held in host memory
    (float32 video + uint8 frames) beside one segment's peak."""
    need = estimate_for_pipeline(pipe, height, width, num_frames, mode, cfg).peak_gb
    need += output_frames * height * width * 3 * (4 + 1) / 2**30
    free = free_memory_bytes(device) / 2**30
    frames = max(num_frames, output_frames)
    if need > free:
        raise ValueError(
            f"{width}x{height} with {frames} frames needs about {need:.1f} GB (estimate, memory mode "
            f"{mode!r}), {free:.1f} GB are free on {torch.device(device).type}: lower the size or frame count, "
            "choose a --gpu-memory-mode, or pass --skip-memory-check"
        )
