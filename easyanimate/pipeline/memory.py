"""GPU memory modes and a peak-memory estimator.

Modes (`--gpu-memory-mode`):
- none: everything on the GPU;
- model_cpu_offload: each model moves to the GPU only while it runs (text encoder, then transformer, then VAE);
- sequential_cpu_offload: layer by layer (slowest, least memory);
- model_cpu_offload_and_qfloat8: model offload, and the transformer's linear weights stored in float8
  (e4m3), cast back to the compute dtype one layer at a time.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models.shape_rule import ShapeRule

MEMORY_MODES = ("none", "model_cpu_offload", "sequential_cpu_offload", "model_cpu_offload_and_qfloat8")


def _fp8_linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    bias = None if self.bias is None else self.bias.to(x.dtype)
    return F.linear(x, self.weight.to(x.dtype), bias)


def store_linear_weights_fp8(module: nn.Module, min_features: int = 64) -> int:
    """Store every nn.Linear weight of `module` as float8_e4m3fn (cast back per call); returns bytes saved.

    Small layers (either side < `min_features`) stay as they are: little to save, more rounding error.
    Norms, embeddings and biases keep their dtype.
    """
    saved = 0
    for layer in module.modules():
        if not isinstance(layer, nn.Linear) or min(layer.in_features, layer.out_features) < min_features:
            continue
        w = layer.weight
        if w.dtype == torch.float8_e4m3fn:
            continue
        saved += w.numel() * (w.element_size() - 1)
        layer.weight = nn.Parameter(w.detach().to(torch.float8_e4m3fn), requires_grad=False)
        layer.forward = types.MethodType(_fp8_linear_forward, layer)
    return saved


def apply_memory_mode(pipe, mode: str, device: str | torch.device = "cuda") -> None:
    if mode not in MEMORY_MODES:
        raise ValueError(f"unknown GPU memory mode {mode!r}; choose from {MEMORY_MODES}")
    device = torch.device(device)
    if mode == "none":
        pipe.to(device)
        return
    if device.type == "cpu":
        raise ValueError(f"{mode} moves models between CPU and GPU memory; on a CPU-only machine use 'none'")
    if mode == "model_cpu_offload_and_qfloat8":
        store_linear_weights_fp8(pipe.transformer)
    if mode == "sequential_cpu_offload":
        pipe.enable_sequential_cpu_offload(device=device)
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
    decode_slice_latents: int = 1,
    linear_share: float = 0.95,  # share of transformer parameters in linear weights (fp8 mode)
    rule: ShapeRule | None = None,  # the model's frame / size rule (`pipe.shape_rule`); None: 1 + 4k, 16 px
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
    if mode == "model_cpu_offload_and_qfloat8":
        tr_bytes = transformer_params * (linear_share * 1 + (1 - linear_share) * dtype_bytes)
    tr = tr_bytes * gb
    vae = vae_params * dtype_bytes * gb
    act = tokens * width_dim * TRANSFORMER_ACT_FACTOR * dtype_bytes * gb
    decode = (
        VAE_DECODE_BYTES_PER_PIXEL_FRAME
        * (rule.temporal_ratio * decode_slice_latents)
        * height
        * width
        * dtype_bytes
        * gb
    )
    if mode == "none":
        peak = te + tr + vae + max(act, decode)
    elif mode == "sequential_cpu_offload":
        largest_layer = 0.05 * max(te, tr)  # a transformer block / T5 layer is a few % of its model
        peak = largest_layer + max(act, decode)
    else:
        peak = max(te, tr + act, vae + decode)
    return MemoryEstimate(te, tr, vae, act, decode, peak, mode)
