"""Temporal motion module: attention along time inserted after a spatial DiT block.

A fresh module is an exact identity (its output projection starts at zero and is added as a
residual), so inserting it into a pretrained PixArt leaves every frame's output unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from .embeddings import sinusoidal_positions


class MotionModule(nn.Module):
    """Self-attention over sequences of tokens ordered in time.

    Input `(N, S, D)`: N independent sequences of S tokens (S = frames for the vanilla module,
    frames * tile area for the grid and full variants). `frame_ids` `(S,)` gives each token's frame
    index, used for the sinusoidal temporal encoding added before every attention layer.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        num_attention_layers: int = 2,
        ff_mult: int = 4,
        norm_eps: float = 1e-6,
        text_attention: bool = False,
        causal: bool = False,
    ):
        super().__init__()
        self.dim = dim
        self.causal = causal  # a token sees its own frame and earlier ones (autoregressive models)
        self.norm_in = nn.LayerNorm(dim, eps=norm_eps)
        self.proj_in = nn.Linear(dim, dim)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(dim, eps=norm_eps) for _ in range(num_attention_layers))
        self.attentions = nn.ModuleList(
            Attention(
                query_dim=dim, heads=num_heads, dim_head=head_dim, bias=True, processor=AttnProcessor2_0()
            )
            for _ in range(num_attention_layers)
        )
        # optional: the caption reaches the module (cross-attention to the projected caption tokens), so the
        # part that knows the frame order can also read the words that say how things move. Zero output
        # projection: adding it to trained modules changes nothing until it learns.
        self.text_norm = self.text_attn = None
        if text_attention:
            self.text_norm = nn.LayerNorm(dim, eps=norm_eps)
            self.text_attn = Attention(
                query_dim=dim, heads=num_heads, dim_head=head_dim, bias=True, processor=AttnProcessor2_0()
            )
            nn.init.zeros_(self.text_attn.to_out[0].weight)
            nn.init.zeros_(self.text_attn.to_out[0].bias)
        self.ff_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.ff = FeedForward(dim, mult=ff_mult, activation_fn="geglu")
        self.proj_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        frame_ids: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        past: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """`context` `(N, L, D)` / `context_mask` `(N, 1, L)` (additive): the caption tokens of each sequence's
        video, read by the optional text attention. `past` (causal modules, frame-by-frame sampling): an empty
        list is filled with this call's attention keys and values (the history's, computed once per generated
        frame); a filled one lets this call's tokens (the present frame's) attend to them as well as to themselves."""
        pe = sinusoidal_positions(frame_ids, self.dim).to(hidden_states.device, hidden_states.dtype)
        cached = bool(past)  # the history is in `past`: these tokens come after all of it
        mask = later = None
        if self.causal:
            later = (frame_ids[None, :] > frame_ids[:, None]).to(hidden_states.device)
        if later is not None and not cached:  # additive: -inf where the key's frame comes after the query's
            mask = torch.zeros(later.shape, dtype=hidden_states.dtype, device=hidden_states.device)
            mask = mask.masked_fill(later, float("-inf"))[None].expand(len(hidden_states), -1, -1)
        # after a cached history, several present frames (a chunk) see the whole history and their own past
        present_later = later if cached and later is not None and bool(later.any()) else None
        h = self.proj_in(self.norm_in(hidden_states))
        for a, (norm, attn) in enumerate(zip(self.attn_norms, self.attentions)):
            q = norm(h) + pe
            if cached:
                h = h + _attend_after(attn, q, *past[a], present_later)
            else:
                if past is not None:  # the history's keys and values, projected once
                    past.append((attn.to_k(q), attn.to_v(q)))
                h = h + attn(q, attention_mask=mask)
        if self.text_attn is not None and context is not None:
            h = h + self.text_attn(
                self.text_norm(h) + pe, encoder_hidden_states=context, attention_mask=context_mask
            )
        h = h + self.ff(self.ff_norm(h))
        return hidden_states + self.proj_out(h)


def _attend_after(
    attn: Attention,
    x: torch.Tensor,
    past_k: torch.Tensor,
    past_v: torch.Tensor,
    later: torch.Tensor | None = None,
) -> torch.Tensor:
    """`attn` (diffusers self-attention, default options) for tokens `x` that also see earlier tokens whose keys
    and values are `past_k`, `past_v`: what `attn(cat(past, x))` gives for `x`, without re-projecting the past.
    `later` `(n, n)`: True where a key among `x` comes after the query (causal within `x`)."""
    b, n, _ = x.shape
    heads = attn.heads
    k = torch.cat([past_k, attn.to_k(x)], 1)
    v = torch.cat([past_v, attn.to_v(x)], 1)
    q, k, v = (t.view(b, t.shape[1], heads, -1).transpose(1, 2) for t in (attn.to_q(x), k, v))
    allowed = None
    if later is not None:  # True = may attend: all of the past, the present's own past
        allowed = torch.cat([later.new_ones(n, past_k.shape[1]), ~later], 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).transpose(1, 2).reshape(b, n, -1)
    return attn.to_out[1](attn.to_out[0](out))
