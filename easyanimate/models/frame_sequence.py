"""The DiT over a list of frames of different sizes: an autoregressive model's compressed history + present.

Pyramid Flow's temporal pyramid keeps older history at lower resolution, so it costs few tokens. Our DiT runs
its spatial blocks frame by frame, so frames of different sizes simply run as separate groups (each size's 2D
position code is computed for its grid and spans the same image, so a coarse frame's tokens sit where their
full-size block sits). The motion modules attend across frames:

- temporal kind (attention along time at each place): every frame's tokens are repeated up to the largest grid,
  the module runs there, and each frame takes back its change averaged over its own blocks; a list of frames of
  one size computes exactly what the whole-clip forward computes;
- full kind (all tokens of all frames): the frames' tokens are simply concatenated, whatever their sizes.

Only the last frame's prediction is returned: the frame being generated (or trained). A chunk of frames denoised
together (the list's last entry a `(B, C, n, h, w)` tensor, `autoregressive_chunk`) returns those n frames'.

`FrameCache` (sampling): with causal motion modules nothing in the history depends on the present frame, and the
clean history is the same at every denoising step of that frame. So the history runs through the blocks once;
each motion module keeps its attention inputs, and every step then computes the present frame's tokens alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .pixart_block import text_mask_bias


@dataclass
class FrameCache:
    """What the history left for the present frame's steps: per motion-module block, its keys and values."""

    key: tuple | None = None  # the history's shapes and grid it was computed for
    modules: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)


def _grid_up(x: torch.Tensor, h: int, w: int, H: int, W: int) -> torch.Tensor:
    """`(B, h*w, D)` tokens repeated up to an `H x W` grid -> `(B, H*W, D)`."""
    if (h, w) == (H, W):
        return x
    b, _, d = x.shape
    x = x.view(b, h, 1, w, 1, d).expand(b, h, H // h, w, W // w, d)
    return x.reshape(b, H * W, d)


def _grid_down(x: torch.Tensor, h: int, w: int, H: int, W: int) -> torch.Tensor:
    """`(B, H*W, D)` averaged over blocks down to `h x w` -> `(B, h*w, D)`."""
    if (h, w) == (H, W):
        return x
    b, _, d = x.shape
    x = x.view(b, h, H // h, w, W // w, d).mean(dim=(2, 4))
    return x.reshape(b, h * w, d)


def _check(model) -> None:
    if model.use_additional_conditions or model.config.get("clip_channels"):
        raise ValueError("frame lists take text-only models (no resolution conditions, no CLIP tokens)")
    if model.config.get("motion_text_attention"):
        raise ValueError(
            "frame lists do not take motion modules that read the caption (motion_text_attention)"
        )
    if set(model.motion_kinds.values()) - {"temporal", "full"}:
        raise ValueError(
            "frame lists need temporal or full motion modules (motion_module_mode vanilla or hybrid)"
        )


def _run_blocks(model, x, sizes, t_mod, context, mask, grid, first_id: int = 0, caches=None):
    """Every block over frames `x` (list of `(B, h_i*w_i, D)`, sizes in tokens) whose frame indices start at
    `first_id`; `t_mod` `(B, F, 6D)`. `caches`: per motion-module block, a list to fill (empty) or to read."""
    b, f, dev = x[0].shape[0], len(x), x[0].device
    H, W = grid
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(size, []).append(i)
    cond = {  # frames of one size run their spatial blocks together: (B * n, tokens, D), a video's adjacent
        size: (
            context.repeat_interleave(len(idx), 0),
            None if mask is None else mask.repeat_interleave(len(idx), 0),
            t_mod[:, idx].flatten(0, 1),
        )
        for size, idx in groups.items()
    }
    frame_ids = torch.arange(first_id, first_id + f, device=dev)
    kinds = model.motion_kinds
    across = f > 1 or caches is not None  # frames to attend to: these, or a cached history
    skips: dict[int, list[torch.Tensor]] = {}
    for i, block in enumerate(model.transformer_blocks):
        if i in model.skip_sources:
            src = skips.pop(model.skip_sources[i])
            x = [a + model.skip_linears[str(i)](s) for a, s in zip(x, src)]
        out = list(x)
        for size, idx in groups.items():
            ctx, ctx_mask, mod = cond[size]
            y = model._run(
                block, torch.stack([x[j] for j in idx], 1).flatten(0, 1), None, ctx, ctx_mask, mod, None, None
            )
            y = y.view(b, len(idx), *y.shape[1:])
            for k, j in enumerate(idx):
                out[j] = y[:, k]
        x = out
        kind = kinds.get(i)
        if kind is not None and across:
            module = model.motion_modules[str(i)]
            if caches is None:  # training: gradient checkpointing applies
                call = lambda *a, m=module: model._run(m, *a)  # noqa: E731
            else:
                call = lambda *a, m=module, past=caches.setdefault(i, []): m(*a, None, None, past)  # noqa: E731
            if kind == "temporal":
                full = torch.stack([_grid_up(t, *sz, H, W) for t, sz in zip(x, sizes)], 1)  # (B, F, H*W, D)
                seq = full.transpose(1, 2).reshape(b * H * W, f, -1)
                delta = call(seq, frame_ids) - seq
                delta = delta.view(b, H * W, f, -1).transpose(1, 2)
                x = [t + _grid_down(delta[:, j], *sz, H, W) for j, (t, sz) in enumerate(zip(x, sizes))]
            else:  # full: every token of every frame, frames of any size side by side
                lengths = [t.shape[1] for t in x]
                ids = torch.cat([torch.full((n,), first_id + j, device=dev) for j, n in enumerate(lengths)])
                x = list(call(torch.cat(x, 1), ids).split(lengths, 1))
        elif kind is not None and model.training and torch.is_grad_enabled():
            # one frame (no history yet): a zero-weighted call gives the module a zero gradient, so data-parallel
            # training reduces the same parameters on every process (as the whole-clip forward does for images)
            probe = model._run(model.motion_modules[str(i)], x[-1][:1, :1], torch.zeros(1, device=dev))
            x = [*x[:-1], x[-1] + 0.0 * probe.sum()]
        if i in model.skip_sources.values():
            skips[i] = x
    return x


def forward_frame_list(
    model,
    frames: list[torch.Tensor],
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor | None = None,
    cache: FrameCache | None = None,
) -> torch.Tensor:
    """`frames`: F latents `(B, C, h_i, w_i)` in time order, the last entry possibly a chunk `(B, C, n, h, w)` of
    n frames; `timestep` `(B,)` or `(B, F)` (F counting a chunk's frames). Returns the last frame's prediction
    `(B, out_channels, h, w)`, or the chunk's `(B, out_channels, n, h, w)`. `cache` (sampling, causal modules):
    the history (all frames before the present ones) is computed once and reused while it stays the same."""
    _check(model)
    chunk = frames[-1].ndim == 5
    n = frames[-1].shape[2] if chunk else 1
    if chunk:
        frames = [*frames[:-1], *frames[-1].unbind(2)]
    p = model.config.patch_size
    b, f = frames[0].shape[0], len(frames)
    dev = frames[0].device
    sizes = []
    for x in frames:
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"frame latents {tuple(x.shape[-2:])} must be multiples of patch_size={p}")
        sizes.append((x.shape[-2] // p, x.shape[-1] // p))
    H, W = max(h for h, _ in sizes), max(w for _, w in sizes)
    if any(H % h or W % w for h, w in sizes):
        raise ValueError(f"frame grids {sizes} must divide the largest one ({H}x{W})")
    if cache is not None and not model.config.get("motion_causal"):
        raise ValueError("a frame cache needs causal motion modules: the history must not see the present")

    timestep = torch.as_tensor(timestep, device=dev)
    if timestep.ndim == 0:
        timestep = timestep.expand(b)
    if timestep.ndim == 1:
        timestep = timestep[:, None].expand(b, f)
    if timestep.shape != (b, f):
        raise ValueError(
            f"timesteps must be (batch,) or (batch, frames) = {(b, f)}, got {tuple(timestep.shape)}"
        )

    tokens = [model.pos_embed(x) for x in frames]  # (B, h_i*w_i, D) each, 2D sin-cos for each grid
    dtype = tokens[0].dtype
    t_mod, t_emb = model.adaln_single(timestep.reshape(-1), None, batch_size=b * f, hidden_dtype=dtype)
    t_mod, t_emb = t_mod.view(b, f, -1), t_emb.view(b, f, -1)
    context = encoder_hidden_states
    if model.caption_projection is not None:
        context = model.caption_projection(context).view(b, -1, tokens[0].shape[-1])
    mask = text_mask_bias(encoder_attention_mask, dtype)

    if cache is None or f == n:
        present = _run_blocks(model, tokens, sizes, t_mod, context, mask, (H, W))[f - n :]
    else:
        m = f - n  # history frames
        key = (tuple(tuple(x.shape) for x in frames[:m]), (H, W), tuple(timestep[:, :m].flatten().tolist()))
        if cache.key != key:  # a new history: run it once, its motion modules keep their attention inputs
            cache.key, cache.modules = key, {}
            _run_blocks(model, tokens[:m], sizes[:m], t_mod[:, :m], context, mask, (H, W), 0, cache.modules)
        present = _run_blocks(
            model, tokens[m:], sizes[m:], t_mod[:, m:], context, mask, (H, W), m, cache.modules
        )

    c = model.out_channels
    out = []
    for j, tokens_j in enumerate(present):
        x = model._output_tokens(tokens_j, t_emb[:, f - n + j])
        h, w = sizes[f - n + j]
        x = x.reshape(b, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)
        out.append(x.reshape(b, c, h * p, w * p))
    return torch.stack(out, 2) if chunk else out[-1]
