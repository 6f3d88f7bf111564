"""VideoTransformer3DModel: the PixArt-alpha DiT extended to video.

Spatial blocks are diffusers' own PixArt blocks with PixArt's parameter names, so a PixArt-alpha
checkpoint maps onto them one to one (see `pixart_weights.py`). Frames are folded into the batch for
the spatial blocks; after each chosen block a `MotionModule` regroups the tokens so attention runs
along time. Optional U-ViT long skips join mirrored blocks through zero-initialised linears.
Fresh motion modules and skips are exact identities: the model then computes PixArt frame by frame.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.embeddings import PatchEmbed, PixArtAlphaTextProjection
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormSingle
from torch import nn

from .motion_adapter import MOTION_CONFIG_KEYS, MotionAdapter
from .pixart_block import pixart_block_forward, text_mask_bias

LONG_SKIP_LAYOUTS = ("mirror", "easyanimate")


def skip_targets(num_layers: int, layout: str = "mirror") -> dict[int, int]:
    """U-ViT pairing, target block -> source block. "mirror": block j of the second half receives the output of
    its mirror N-1-j. "easyanimate" (upstream v2 / v3, 28 blocks): blocks 15..27 receive blocks 12..0; 13 and
    14 none."""
    if layout == "easyanimate":
        if num_layers < 28:
            raise ValueError(f"the easyanimate long-skip layout needs 28 blocks, this model has {num_layers}")
        return {15 + k: 12 - k for k in range(13)}
    if layout != "mirror":
        raise ValueError(f"long_skip_layout must be one of {LONG_SKIP_LAYOUTS}, got {layout!r}")
    half = num_layers // 2
    return {num_layers - 1 - i: i for i in range(half)}


def check_history(history: list[int], causal: bool, kinds: dict[int, str]) -> None:
    """An autoregressive model's history compression: factors that are powers of two, never shrinking with
    distance; causal temporal or full motion modules."""
    if (
        not history
        or any(f < 1 or f & (f - 1) for f in history)
        or any(a > b for a, b in zip(history, history[1:]))
    ):
        raise ValueError(
            f"autoregressive_history must be powers of two that grow with distance, got {history}"
        )
    if not causal:
        raise ValueError(
            "autoregressive_history needs motion_causal: the present frame may not see the future"
        )
    if not kinds or set(kinds.values()) - {"temporal", "full"}:
        raise ValueError("an autoregressive model needs temporal or full motion modules (vanilla or hybrid)")


class CLIPProjection(nn.Module):
    """A CLIP image embedding `(B, clip_channels)` -> `tokens` extra context tokens (upstream V3 InP models)."""

    def __init__(self, clip_channels: int, width: int, tokens: int = 8):
        super().__init__()
        self.tokens = tokens
        self.linear_1 = nn.Linear(clip_channels, width * tokens)
        self.act_1 = nn.GELU(approximate="tanh")
        self.linear_2 = nn.Linear(width * tokens, width * tokens)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act_1(self.linear_1(embeds))).view(embeds.shape[0], self.tokens, -1)


class VideoTransformer3DModel(ModelMixin, ConfigMixin, PeftAdapterMixin):
    """PixArt-alpha DiT over video latents `(B, C, F, H, W)`; F = 1 is the image (t2i) path.

    LoRA through peft (`PeftAdapterMixin`: add_adapter, load_lora_adapter, set_adapters, unload_lora).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["BasicTransformerBlock", "MotionModule"]

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        in_channels: int = 4,
        out_channels: int | None = 8,
        num_layers: int = 28,
        dropout: float = 0.0,
        cross_attention_dim: int | None = 1152,
        attention_bias: bool = True,
        sample_size: int = 128,
        patch_size: int = 2,
        activation_fn: str = "gelu-approximate",
        num_embeds_ada_norm: int = 1000,
        upcast_attention: bool = False,
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-6,
        interpolation_scale: float | None = None,
        use_additional_conditions: bool | None = None,
        caption_channels: int | None = None,
        motion_module_mode: str = "vanilla",
        motion_module_every: int = 1,
        motion_grid_size: int = 2,
        motion_num_attention_layers: int = 2,
        motion_ff_mult: int = 4,
        use_long_skips: bool = False,
        motion_num_heads: int | None = None,
        motion_attention_kinds: list[list[str]] | None = None,
        long_skip_layout: str = "mirror",
        clip_channels: int | None = None,
        motion_text_attention: bool = False,
        motion_causal: bool = False,
        autoregressive_history: list[int] | None = None,
        autoregressive_chunk: int = 1,
    ):
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        self.inner_dim = inner_dim
        self.out_channels = in_channels if out_channels is None else out_channels
        # PixArt's own rule: only the 1024px models (sample_size 128) use resolution/aspect conditions.
        self.use_additional_conditions = (
            sample_size == 128 if use_additional_conditions is None else use_additional_conditions
        )
        self.gradient_checkpointing = False
        interp = interpolation_scale if interpolation_scale is not None else max(sample_size // 64, 1)

        self.pos_embed = PatchEmbed(
            height=sample_size,
            width=sample_size,
            patch_size=patch_size,
            in_channels=in_channels,
            embed_dim=inner_dim,
            interpolation_scale=interp,
        )
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner_dim,
                num_attention_heads,
                attention_head_dim,
                dropout=dropout,
                cross_attention_dim=cross_attention_dim,
                activation_fn=activation_fn,
                num_embeds_ada_norm=num_embeds_ada_norm,
                attention_bias=attention_bias,
                upcast_attention=upcast_attention,
                norm_type="ada_norm_single",
                norm_elementwise_affine=norm_elementwise_affine,
                norm_eps=norm_eps,
            )
            for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(inner_dim, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.randn(2, inner_dim) / inner_dim**0.5)
        self.proj_out = nn.Linear(inner_dim, patch_size * patch_size * self.out_channels)
        self.adaln_single = AdaLayerNormSingle(
            inner_dim, use_additional_conditions=self.use_additional_conditions
        )
        self.caption_projection = None
        if caption_channels is not None:
            self.caption_projection = PixArtAlphaTextProjection(
                in_features=caption_channels, hidden_size=inner_dim
            )

        # upstream V3 InP: a CLIP image embedding becomes extra context tokens
        self.clip_projection = CLIPProjection(clip_channels, inner_dim) if clip_channels else None

        self._build_motion_modules()
        if autoregressive_history is not None:
            check_history(autoregressive_history, motion_causal, self.motion_kinds)
        self.skip_sources = skip_targets(num_layers, long_skip_layout) if use_long_skips else {}
        self.skip_linears = nn.ModuleDict(
            {str(j): nn.Linear(inner_dim, inner_dim) for j in self.skip_sources}
        )
        for lin in self.skip_linears.values():
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def _build_motion_modules(self) -> None:
        self.motion_modules = MotionAdapter.for_transformer(self.config)

    @property
    def motion_kinds(self) -> dict[int, str]:
        """Block index -> the kind of its motion module ("temporal", "grid" or "full")."""
        return self.motion_modules.kinds

    def set_motion_layout(self, **layout: Any) -> None:
        """Replace the motion modules by fresh (identity) ones of a new layout.

        Keys: motion_module_mode, motion_module_every, motion_grid_size, motion_num_attention_layers,
        motion_ff_mult. The change is recorded in the config, so `save_pretrained` keeps it.
        """
        unknown = set(layout) - set(MOTION_CONFIG_KEYS)
        if unknown:
            raise ValueError(
                f"unknown motion layout keys {sorted(unknown)}; valid: {list(MOTION_CONFIG_KEYS)}"
            )
        self.set_motion_adapter(MotionAdapter.for_transformer(self.config, **layout))

    def set_autoregressive(self, history: list[int] | None, chunk: int = 1) -> None:
        """Make this model generate frame by frame (`history`: the compression factor of each earlier latent frame
        it sees, by distance: [1, 2, 4, 4] sees 4 frames, the last at full size, the oldest two at 1/4; None:
        back to whole clips), or chunk by chunk (`chunk`: latent frames denoised together, history included; see
        `diffusion/temporal_pyramid.py`). The motion modules become causal in time and keep their weights; the
        choice is recorded in the config, so the saved model's pipeline samples the same way."""
        causal = history is not None
        if causal:
            check_history(history, True, self.motion_kinds)
        if chunk < 1:
            raise ValueError(f"autoregressive_chunk must be at least 1, got {chunk}")
        self.motion_modules.set_causal(causal)
        self.register_to_config(
            motion_causal=causal,
            autoregressive_history=list(history) if causal else None,
            autoregressive_chunk=int(chunk) if causal else 1,
        )

    def set_motion_adapter(self, adapter: MotionAdapter) -> None:
        """Hold `adapter` as this model's motion modules (its layout is recorded in the config)."""
        problem = adapter.fits(self.config)
        if problem:
            raise ValueError(problem)
        ref = next(self.parameters())
        self.register_to_config(**adapter.layout)
        self.motion_modules = adapter.to(device=ref.device, dtype=ref.dtype)

    # ----------------------------------------------------------------------------------------------
    # token regrouping for the motion modules; hidden states are (B*F, h*w, D), frames in the batch

    def _to_motion(self, x: torch.Tensor, kind: str, b: int, f: int, h: int, w: int):
        d = x.shape[-1]
        dev = x.device
        if kind == "temporal":
            seq = x.view(b, f, h * w, d).transpose(1, 2).reshape(b * h * w, f, d)
            return seq, torch.arange(f, device=dev)
        if kind == "full":
            return x.reshape(b, f * h * w, d), torch.arange(f, device=dev).repeat_interleave(h * w)
        g = self.config.motion_grid_size
        if h % g or w % g:
            raise ValueError(
                f"grid motion modules need the token grid ({h}x{w}) to be divisible by motion_grid_size={g}"
            )
        seq = x.view(b, f, h // g, g, w // g, g, d).permute(0, 2, 4, 1, 3, 5, 6)
        seq = seq.reshape(b * (h // g) * (w // g), f * g * g, d)
        return seq, torch.arange(f, device=dev).repeat_interleave(g * g)

    def _from_motion(self, seq: torch.Tensor, kind: str, b: int, f: int, h: int, w: int) -> torch.Tensor:
        d = seq.shape[-1]
        if kind == "temporal":
            return seq.view(b, h * w, f, d).transpose(1, 2).reshape(b * f, h * w, d)
        if kind == "full":
            return seq.reshape(b * f, h * w, d)
        g = self.config.motion_grid_size
        x = seq.view(b, h // g, w // g, f, g, g, d).permute(0, 3, 1, 4, 2, 5, 6)
        return x.reshape(b * f, h * w, d)

    @staticmethod
    def _motion_text(context: torch.Tensor, mask: torch.Tensor | None, per_video: int) -> tuple:
        """Each video's caption tokens (and additive mask) repeated for its `per_video` motion sequences."""
        return context.repeat_interleave(per_video, dim=0), (
            None if mask is None else mask.repeat_interleave(per_video, dim=0)
        )

    def _run(self, module: nn.Module, *args):
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)

    # ----------------------------------------------------------------------------------------------

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
        inpaint_latents: torch.Tensor | None = None,
        clip_encoder_hidden_states: torch.Tensor | None = None,
        clip_attention_mask: torch.Tensor | None = None,
        frame_cache=None,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Denoise latents.

        Args:
            hidden_states: `(B, C, F, H, W)` video latents, or `(B, C, H, W)` for an image.
            timestep: `(B,)` or a scalar.
            encoder_hidden_states: `(B, L, caption_channels)` text features.
            encoder_attention_mask: `(B, L)` with 1 = keep, 0 = padding.
            added_cond_kwargs: PixArt's `resolution` / `aspect_ratio` when the config uses them.
            inpaint_latents: `(B, C', F, H, W)` appended to `hidden_states` along channels (InP models).
            clip_encoder_hidden_states: `(B, clip_channels)` CLIP image embedding -> extra context tokens after
                the caption's, `clip_attention_mask` `(B, tokens)` their mask (upstream V3 InP models).
        Returns `(B, out_channels, F, H, W)` (or 4D for a 4D input).

        `timestep` `(B, F)`: a noise level per frame (autoregressive models: clean history, noisy present).
        `hidden_states` as a list of per-frame latents `(B, C, h_i, w_i)` of any sizes (an autoregressive model's
        compressed history, then the frame being generated): returns the last frame's prediction; a list ending
        in a chunk `(B, C, n, h, w)` returns the chunk's (see `frame_sequence.py`; `frame_cache`, a `FrameCache`,
        computes an unchanged history once while sampling).
        """
        is_list = isinstance(hidden_states, (list, tuple))
        if is_list and len(hidden_states) == 1 and hidden_states[0].ndim == 5:
            # a chunk without history is a whole clip: the same result without the frame list
            hidden_states = hidden_states[0]
        if isinstance(hidden_states, (list, tuple)):
            from .frame_sequence import forward_frame_list

            out = forward_frame_list(
                self,
                list(hidden_states),
                timestep,
                encoder_hidden_states,
                encoder_attention_mask,
                frame_cache,
            )
            return Transformer2DModelOutput(sample=out) if return_dict else (out,)
        image_input = hidden_states.ndim == 4
        if image_input:
            hidden_states = hidden_states.unsqueeze(2)
            if inpaint_latents is not None and inpaint_latents.ndim == 4:
                inpaint_latents = inpaint_latents.unsqueeze(2)
        if inpaint_latents is not None:
            hidden_states = torch.cat([hidden_states, inpaint_latents.to(hidden_states)], dim=1)
        b, _, f, height, width = hidden_states.shape
        p = self.config.patch_size
        if height % p or width % p:
            raise ValueError(f"latent height/width ({height}x{width}) must be multiples of patch_size={p}")
        h, w = height // p, width // p
        if self.use_additional_conditions and added_cond_kwargs is None:
            raise ValueError("this model uses resolution/aspect-ratio conditions: pass `added_cond_kwargs`")

        timestep = torch.as_tensor(timestep, device=hidden_states.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(b)
        per_frame = timestep.ndim == 2
        if per_frame and (timestep.shape != (b, f) or self.use_additional_conditions):
            raise ValueError(
                f"per-frame timesteps must be (batch, frames) = {(b, f)}, got {tuple(timestep.shape)}"
                + (
                    " (and this model's resolution conditions take one timestep per video)"
                    * self.use_additional_conditions
                )
            )
        if clip_encoder_hidden_states is not None and self.clip_projection is None:
            raise ValueError("clip_encoder_hidden_states given, but this model has no clip_projection")
        if clip_encoder_hidden_states is not None:
            clip_mask = clip_attention_mask
            if clip_mask is None:
                clip_mask = torch.ones(b, self.clip_projection.tokens, device=hidden_states.device)
            if encoder_attention_mask is None:
                encoder_attention_mask = torch.ones(
                    encoder_hidden_states.shape[:2], device=hidden_states.device
                )
            encoder_attention_mask = torch.cat(
                [encoder_attention_mask, clip_mask.to(encoder_attention_mask)], 1
            )
        encoder_attention_mask = text_mask_bias(encoder_attention_mask, hidden_states.dtype)

        x = hidden_states.permute(0, 2, 1, 3, 4).reshape(b * f, -1, height, width)
        x = self.pos_embed(x)  # (B*F, h*w, D), 2D sin-cos computed for this grid
        if per_frame:  # (B, F) -> one modulation per frame, frames already in the batch order
            t_mod, t_emb = self.adaln_single(
                timestep.reshape(-1), None, batch_size=b * f, hidden_dtype=x.dtype
            )
        else:
            t_mod, t_emb = self.adaln_single(
                timestep, added_cond_kwargs, batch_size=b, hidden_dtype=x.dtype
            )  # computed once per video, shared by its frames
            t_mod = t_mod.repeat_interleave(f, dim=0)
            t_emb = t_emb.repeat_interleave(f, dim=0)
        context = encoder_hidden_states
        if self.caption_projection is not None:
            context = self.caption_projection(context).view(b, -1, x.shape[-1])
        if clip_encoder_hidden_states is not None:
            clip_tokens = self.clip_projection(clip_encoder_hidden_states.to(context.dtype))
            context = torch.cat([context, clip_tokens], dim=1)
        video_context, video_mask = (
            context,
            encoder_attention_mask,
        )  # per video: for text-reading motion modules
        context = context.repeat_interleave(f, dim=0)
        if encoder_attention_mask is not None:
            encoder_attention_mask = encoder_attention_mask.repeat_interleave(f, dim=0)
        reads_text = bool(self.config.get("motion_text_attention"))

        skips: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.transformer_blocks):
            if i in self.skip_sources:
                x = x + self.skip_linears[str(i)](skips.pop(self.skip_sources[i]))
            kind = self.motion_kinds.get(i)
            if kind == "inside":  # upstream EasyAnimate: between self- and cross-attention, also for F = 1
                module = self.motion_modules[str(i)]
                between = lambda y, m=module: m(y, b, f, h, w)  # noqa: E731
                x = self._run(pixart_block_forward, block, x, context, encoder_attention_mask, t_mod, between)
                kind = None
            else:
                x = self._run(block, x, None, context, encoder_attention_mask, t_mod, None, None)
            if kind is not None and f > 1:  # an image has no motion: F = 1 stays pure PixArt
                seq, frame_ids = self._to_motion(x, kind, b, f, h, w)
                text = self._motion_text(video_context, video_mask, seq.shape[0] // b) if reads_text else ()
                seq = self._run(self.motion_modules[str(i)], seq, frame_ids, *text)
                x = self._from_motion(seq, kind, b, f, h, w)
            elif kind is not None and self.training and torch.is_grad_enabled():
                # Training on an image: a zero-weighted call of the module on one token leaves x exactly as
                # it is but gives the module a (zero) gradient, so data-parallel training (DDP, DeepSpeed ZeRO,
                # FSDP) reduces the same parameters on every process whatever kind of batch each step has.
                text = self._motion_text(video_context[:1], None if video_mask is None else video_mask[:1], 1)
                probe = self._run(
                    self.motion_modules[str(i)],
                    x[:1, :1],
                    torch.zeros(1, device=x.device),
                    *(text if reads_text else ()),
                )
                x = x + 0.0 * probe.sum()
            if i in self.skip_sources.values():
                skips[i] = x

        x = self._output_tokens(x, t_emb)
        c = self.out_channels
        x = x.reshape(b, f, h, w, p, p, c).permute(0, 6, 1, 2, 4, 3, 5)
        out = x.reshape(b, c, f, height, width)
        if image_input:
            out = out.squeeze(2)
        if not return_dict:
            return (out,)
        return Transformer2DModelOutput(sample=out)

    def _output_tokens(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """PixArt's final layer: tokens `(N, tokens, D)` modulated by their timestep embedding `(N, D)`, then
        projected to `patch * patch * out_channels` values each."""
        shift, scale = (self.scale_shift_table[None] + t_emb[:, None]).chunk(2, dim=1)
        return self.proj_out(self.norm_out(x) * (1 + scale) + shift)

    # ----------------------------------------------------------------------------------------------
    # PixArt loading and motion-module files live in their own module; thin methods here.

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> VideoTransformer3DModel:
        """Our folders; upstream EasyAnimate's `Transformer3DModel` folders (v1, v2, v3 releases: converted, see
        `upstream_transformer.py`); any other class is refused by name (diffusers would leave meta tensors)."""
        from .local import require_local
        from .upstream_transformer import UPSTREAM_CLASS, load_upstream_transformer

        require_local(pretrained_model_name_or_path, kwargs, "transformer")
        folder = str(pretrained_model_name_or_path)
        if kwargs.get("subfolder"):
            folder = os.path.join(folder, kwargs["subfolder"])
        config_path = os.path.join(folder, "config.json")
        if os.path.isfile(config_path):
            import json

            with open(config_path) as fh:
                name = json.load(fh).get("_class_name")
            if name == UPSTREAM_CLASS:
                return load_upstream_transformer(
                    cls, folder, kwargs.get("dtype") or kwargs.get("torch_dtype")
                )
            if name not in (cls.__name__, None):
                raise ValueError(
                    f"{folder} holds a {name}, not a {cls.__name__} (nor upstream EasyAnimate's "
                    f"{UPSTREAM_CLASS}); a PixArt-alpha folder loads with {cls.__name__}.from_pixart"
                )
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def from_pixart(cls, path_or_model, **video_options) -> VideoTransformer3DModel:
        """Build from a diffusers PixArt-alpha transformer (folder or model); see `pixart_weights`."""
        from .pixart_weights import video_transformer_from_pixart

        return video_transformer_from_pixart(cls, path_or_model, **video_options)

    def save_motion_modules(self, directory: str) -> str:
        """Write the motion modules alone (a `MotionAdapter` folder) to `directory`; returns the weights file."""
        return self.motion_modules.save_folder(directory)

    def load_motion_modules(self, directory: str, layout: str | None = None) -> None:
        """Load a `MotionAdapter` folder onto this backbone of the same width and depth (the layout follows the
        folder's), or a bare upstream motion-module file in the named `layout` (`easyanimate-v1` for
        `easyanimate_v1_mm.safetensors`)."""
        if os.path.isfile(directory):
            from .upstream_transformer import load_upstream_motion_file

            load_upstream_motion_file(self, directory, layout)
            return
        if not os.path.isfile(os.path.join(directory, "config.json")):
            raise FileNotFoundError(f"not a motion module folder (no config.json): {directory}")
        self.set_motion_adapter(MotionAdapter.from_pretrained(directory))

    def widen_inputs(self, in_channels: int) -> None:
        """Grow the patch embedding to `in_channels` (inpaint inputs `2*C + 1`); the new channels get zero
        weights, so the widened model computes exactly what it did before."""
        proj = self.pos_embed.proj
        if in_channels < proj.in_channels:
            raise ValueError(f"in_channels={in_channels} is smaller than the model's {proj.in_channels}")
        if in_channels == proj.in_channels:
            return
        wide = nn.Conv2d(
            in_channels, proj.out_channels, proj.kernel_size, proj.stride, bias=proj.bias is not None
        )
        wide.to(device=proj.weight.device, dtype=proj.weight.dtype)
        with torch.no_grad():
            wide.weight.zero_()
            wide.weight[:, : proj.in_channels] = proj.weight
            if proj.bias is not None:
                wide.bias.copy_(proj.bias)
        self.pos_embed.proj = wide
        self.register_to_config(in_channels=in_channels)

    def backbone_parameters(self):
        """Parameters of the spatial DiT (everything but motion modules and long skips)."""
        for name, param in self.named_parameters():
            if not name.startswith(("motion_modules.", "skip_linears.")):
                yield name, param
