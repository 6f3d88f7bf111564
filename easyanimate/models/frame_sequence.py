"""The DiT over a list of frames of different sizes: an autoregressive model's compressed history + present.

Pyramid Flow's temporal pyramid keeps older history at lower resolution, so it costs few tokens. Our DiT runs
its spatial blocks frame by frame, so frames of different sizes simply run as separate groups (each size's 2D
position code is computed for its grid and spans the same image, so a coarse frame's tokens sit where their
full-size block sits). The motion modules attend across frames:

- temporal kind (attention along time at each place): every frame's tokens are repeated up to the largest grid,
  the module runs there, and each frame takes back its change averaged over its own blocks; a list of frames of
  one size computes exactly what the whole-clip forward computes;
- full kind (all tokens of all frames): the frames' tokens are simply concatenated, whatever their sizes.

Only the last frame's prediction is returned: the frame being generated (or trained).
"""

from __future__ import annotations

import torch


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


def forward_frame_list(
    model,
    frames: list[torch.Tensor],
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """`frames`: F latents `(B, C, h_i, w_i)` in time order; `timestep` `(B,)` or `(B, F)`. Returns the last
    frame's prediction `(B, out_channels, h, w)`."""
    if model.use_additional_conditions or model.config.get("clip_channels"):
        raise ValueError("frame lists take text-only models (no resolution conditions, no CLIP tokens)")
    kinds = model.motion_kinds
    if model.config.get("motion_text_attention"):
        raise ValueError(
            "frame lists do not take motion modules that read the caption (motion_text_attention)"
        )
    if set(kinds.values()) - {"temporal", "full"}:
        raise ValueError(
            "frame lists need temporal or full motion modules (motion_module_mode vanilla or hybrid)"
        )
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
    mask = encoder_attention_mask
    if mask is not None and mask.ndim == 2:  # PixArt's convention: keep-mask -> additive bias (B, 1, L)
        mask = ((1 - mask.to(dtype)) * -10000.0).unsqueeze(1)

    # frames of one size run their spatial blocks together: (B * n, tokens, D), frames of a video adjacent
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(size, []).append(i)

    def grouped(per_frame: list[torch.Tensor], idx: list[int]) -> torch.Tensor:
        return torch.stack([per_frame[i] for i in idx], 1).flatten(0, 1)

    cond = {
        size: (
            context.repeat_interleave(len(idx), 0),
            None if mask is None else mask.repeat_interleave(len(idx), 0),
            t_mod[:, idx].flatten(0, 1),
        )
        for size, idx in groups.items()
    }
    frame_ids = torch.arange(f, device=dev)
    skips: dict[int, list[torch.Tensor]] = {}
    x = tokens
    for i, block in enumerate(model.transformer_blocks):
        if i in model.skip_sources:
            src = skips.pop(model.skip_sources[i])
            x = [a + model.skip_linears[str(i)](s) for a, s in zip(x, src)]
        out = list(x)
        for size, idx in groups.items():
            ctx, ctx_mask, mod = cond[size]
            y = model._run(block, grouped(x, idx), None, ctx, ctx_mask, mod, None, None)
            y = y.view(b, len(idx), *y.shape[1:])
            for k, j in enumerate(idx):
                out[j] = y[:, k]
        x = out
        kind = kinds.get(i)
        if kind is not None and f > 1:
            module = model.motion_modules[str(i)]
            if kind == "temporal":
                full = torch.stack([_grid_up(t, *sz, H, W) for t, sz in zip(x, sizes)], 1)  # (B, F, H*W, D)
                seq = full.transpose(1, 2).reshape(b * H * W, f, -1)
                delta = (model._run(module, seq, frame_ids) - seq).view(b, H * W, f, -1).transpose(1, 2)
                x = [t + _grid_down(delta[:, j], *sz, H, W) for j, (t, sz) in enumerate(zip(x, sizes))]
            else:  # full: every token of every frame, frames of any size side by side
                lengths = [t.shape[1] for t in x]
                ids = torch.cat([torch.full((n,), j, device=dev) for j, n in enumerate(lengths)])
                seq = model._run(module, torch.cat(x, 1), ids)
                x = list(seq.split(lengths, 1))
        elif kind is not None and model.training and torch.is_grad_enabled():
            # one frame (no history yet): a zero-weighted call gives the module a zero gradient, so data-parallel
            # training reduces the same parameters on every process (as the whole-clip forward does for images)
            probe = model._run(model.motion_modules[str(i)], x[-1][:1, :1], torch.zeros(1, device=dev))
            x = [*x[:-1], x[-1] + 0.0 * probe.sum()]
        if i in model.skip_sources.values():
            skips[i] = x

    last = x[-1]
    shift, scale = (model.scale_shift_table[None] + t_emb[:, -1, None]).chunk(2, dim=1)
    last = model.proj_out(model.norm_out(last) * (1 + scale) + shift)
    h, w = sizes[-1]
    c = model.out_channels
    last = last.reshape(b, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return last.reshape(b, c, h * p, w * p)
