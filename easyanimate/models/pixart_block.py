"""A PixArt block (diffusers' `BasicTransformerBlock`, `ada_norm_single`) run with a step between its self- and
cross-attention: where upstream EasyAnimate's motion modules sit. Same submodules and the same computation as
the block's own forward otherwise (no positional embedding or chunking: PixArt uses neither)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.models.attention import BasicTransformerBlock


def pixart_block_forward(
    block: BasicTransformerBlock,
    x: torch.Tensor,
    context: torch.Tensor,
    context_mask: torch.Tensor | None,
    t_mod: torch.Tensor,
    between: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """`x` `(N, tokens, D)`; `between(x)` runs after self-attention's residual, before cross-attention."""
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
        block.scale_shift_table[None] + t_mod.reshape(x.shape[0], 6, -1)
    ).chunk(6, dim=1)
    x = gate_msa * block.attn1(block.norm1(x) * (1 + scale_msa) + shift_msa) + x
    if between is not None:
        x = between(x)
    x = block.attn2(x, encoder_hidden_states=context, attention_mask=context_mask) + x
    return gate_mlp * block.ff(block.norm2(x) * (1 + scale_mlp) + shift_mlp) + x


def text_mask_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """PixArt's convention: a keep-mask `(B, L)` (1 = keep) becomes an additive bias `(B, 1, L)`; a bias passes."""
    if mask is None or mask.ndim != 2:
        return mask
    return ((1 - mask.to(dtype)) * -10000.0).unsqueeze(1)
