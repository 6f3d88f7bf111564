"""EasyAnimatePipeline: text-to-video / image, image-to-video (first / last frame), video-to-video.

A diffusers `DiffusionPipeline` with components `vae` (SliceVAE), `text_encoder`, `tokenizer`,
`transformer` (VideoTransformer3DModel) and `scheduler`; `from_pretrained` / `save_pretrained` use the
diffusers folder layout, and diffusers' own `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`
loads a saved folder (`custom_entry.py`). diffusers' call conventions: `prompt_embeds` / `negative_prompt_embeds`
with their attention masks, `num_videos_per_prompt`, `callback_on_step_end(pipe, step, t, callback_kwargs)`,
and its LoRA API (`lora_loader.py`). Long videos are in `long_video.py`, memory modes in `memory.py`; this file
is the sampling loop and its inputs.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..diffusion.objectives import Objective
from ..diffusion.samplers import SAMPLERS, prediction_type_of, swap_scheduler
from ..diffusion.temporal_pyramid import TemporalPyramid, temporal_pyramid_of
from ..models.local import require_local
from ..models.shape_rule import ShapeRule
from ..models.text_encoder import TextEncoder
from .conditioning import (
    ClipTokens,
    conditioning_video,
    inpaint_latents,
    load_image,
    load_video,
    upstream_inpaint_latents,
)
from .custom_entry import entry_class_name, write_entry
from .lora_loader import EasyAnimateLoraLoaderMixin

logger = logging.getLogger(__name__)


def check_complete(folder: str, given: dict | None = None) -> None:
    """Every component a local pipeline folder's `model_index.json` lists has its subfolder (a folder without
    `tokenizer/` loaded and turned every prompt into unknown tokens). Components passed in `given` need none."""
    index = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index):
        return  # not a local pipeline folder: diffusers says what is wrong
    with open(index) as fh:
        config = json.load(fh)
    for name, value in config.items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None or name in (given or {}):
            continue
        if not os.path.isdir(os.path.join(folder, name)):
            raise FileNotFoundError(
                f"{folder} is incomplete: no {name}/ (its model_index.json lists a {value[1]})"
            )


def check_experts(transformer, transformer_2, boundary_ratio: float | None) -> None:
    """Two experts need a boundary in (0, 1) and the same input / output layout; one needs no boundary."""
    if transformer_2 is None:
        if boundary_ratio is not None:
            raise ValueError(
                f"boundary_ratio={boundary_ratio} is for two experts: this pipeline has no transformer_2"
            )
        return
    if boundary_ratio is None or not 0 < boundary_ratio < 1:
        raise ValueError(f"two experts need a boundary_ratio in (0, 1), got {boundary_ratio}")
    keys = ("in_channels", "out_channels", "patch_size", "sample_size", "caption_channels")
    differ = {k: (transformer.config.get(k), transformer_2.config.get(k)) for k in keys}
    differ = {k: v for k, v in differ.items() if v[0] != v[1]}
    if differ:
        raise ValueError(f"transformer and transformer_2 must take the same inputs; they differ in {differ}")
    if temporal_pyramid_of(transformer.config) != temporal_pyramid_of(transformer_2.config):
        raise ValueError(
            "two experts must generate the same way: their autoregressive_history / autoregressive_chunk differ"
        )


@dataclass
class EasyAnimateOutput(BaseOutput):
    """`frames`: np `(B, F, H, W, 3)` / torch `(B, 3, F, H, W)` in [0, 1], PIL lists, or latents."""

    frames: Any


class EasyAnimatePipeline(DiffusionPipeline, EasyAnimateLoraLoaderMixin):
    model_cpu_offload_seq = "text_encoder->transformer->transformer_2->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    _optional_components = ["image_encoder", "feature_extractor", "transformer_2"]

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        transformer,
        scheduler,
        image_encoder=None,
        feature_extractor=None,
        transformer_2=None,
        boundary_ratio: float | None = None,
    ):
        super().__init__()
        check_experts(transformer, transformer_2, boundary_ratio)
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            transformer=transformer,
            scheduler=scheduler,
            image_encoder=image_encoder,  # upstream V3 InP: CLIP vision model for the start image's tokens
            feature_extractor=feature_extractor,
            # Wan 2.2's two experts (diffusers' names): `transformer` denoises timesteps at or above
            # boundary_ratio x the sampler's train timesteps (high noise: layout and motion), `transformer_2`
            # the rest (low noise: shape and detail)
            transformer_2=transformer_2,
        )
        self.register_to_config(boundary_ratio=boundary_ratio)

    # ----------------------------------------------------------------------------------------------- folders

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """A pipeline folder; `dtype=` for the weights' dtype. The folder's entry module (`custom_entry.py`, for
        diffusers' `DiffusionPipeline`) is never imported here: this class is the one it names (`load_config`)."""
        require_local(pretrained_model_name_or_path, kwargs, "pipeline")
        check_complete(str(pretrained_model_name_or_path), given=kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def load_config(cls, *args, **kwargs):
        """diffusers' `load_config`, with our own `[module, class]` class name read as this class: diffusers would
        otherwise import the folder's entry module through its module cache, copying the file there, which two
        processes loading one folder at once raced on ("module ... has no attribute 'EasyAnimatePipeline'")."""
        out = super().load_config(*args, **kwargs)
        config = out[0] if isinstance(out, tuple) else out
        if list(config.get("_class_name") or []) == entry_class_name(cls.__name__):
            config["_class_name"] = cls.__name__
        return out

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        super().save_pretrained(save_directory, *args, **kwargs)
        write_entry(str(save_directory), type(self).__name__)

    # ----------------------------------------------------------------------------------------------- facts

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def shape_rule(self) -> ShapeRule:
        """Frames `1 + rk` (the VAE's temporal ratio r); sizes multiples of VAE downsampling x patch size (x the
        coarsest stage's factor for a spatial-pyramid model: every stage is whole patches)."""
        rule = ShapeRule.of(self.vae, self.transformer)
        coarsest = max(
            self.pyramid.coarsest if self.pyramid is not None else 1,
            self.temporal_pyramid.coarsest if self.temporal_pyramid is not None else 1,
        )
        return rule.with_patch(coarsest)

    def expert_for(self, t: torch.Tensor | float) -> torch.nn.Module:
        """The transformer that denoises timestep `t`: `transformer`, or with two experts `transformer_2` below
        the boundary."""
        if getattr(self, "transformer_2", None) is None:
            return self.transformer
        boundary = self.config.boundary_ratio * self.scheduler.config.num_train_timesteps
        return self.transformer if float(t) >= boundary else self.transformer_2

    @property
    def temporal_pyramid(self) -> TemporalPyramid | None:
        """The history compression of a model that generates frame by frame (autoregressive), else None."""
        return temporal_pyramid_of(self.transformer.config)

    @property
    def pyramid(self):
        """The stage layout of a spatial-pyramid flow model (its sampler's), else None."""
        return getattr(self.scheduler, "schedule", None) if hasattr(self.scheduler, "initial_shape") else None

    @property
    def size_factor(self) -> int:
        """Height and width must be multiples of this: VAE downsampling x patch size."""
        return self.shape_rule.size_multiple

    @property
    def inpaint_kind(self) -> str | None:
        """ "mask": ours (`2C + 1` channels: noisy | mask share | masked-video latents); "upstream": upstream V3
        InP (`3C`: noisy | VAE latents of the mask | of the masked video); None: text-to-video only."""
        channels, c = self.transformer.config.in_channels, self.latent_channels
        return {2 * c + 1: "mask", 3 * c: "upstream"}.get(channels)

    @property
    def is_inpaint_model(self) -> bool:
        return self.inpaint_kind is not None

    @property
    def default_size(self) -> int:
        return self.transformer.config.sample_size * self.vae.spatial_compression_ratio

    def set_sampler(self, name: str) -> None:
        """Swap the sampler by name, keeping the model's training schedule and prediction type."""
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; choose from {list(SAMPLERS)}")
        self.scheduler = swap_scheduler(self.scheduler, name)

    # ----------------------------------------------------------------------------------------------- text

    def _encode_text(
        self, prompts: Sequence[str], max_sequence_length: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = TextEncoder(self.text_encoder, self.tokenizer, max_length=max_sequence_length)
        features, mask = encoder(list(prompts))
        return features.to(device, self.transformer.dtype), mask.to(device)

    def encode_prompt(
        self,
        prompt: str | Sequence[str] | None,
        negative_prompt: str | Sequence[str] | None = "",
        do_classifier_free_guidance: bool = True,
        num_videos_per_prompt: int = 1,
        device: torch.device | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        max_sequence_length: int = 120,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """`(prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask)`,
        each repeated `num_videos_per_prompt` times per prompt (diffusers' PixArt convention). Given embeddings
        are used as they are (an all-ones mask when none is given); the negatives are None without guidance."""
        device = device or self._execution_device
        if prompt_embeds is None:
            if prompt is None:
                raise ValueError("give a prompt or prompt_embeds")
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds, prompt_attention_mask = self._encode_text(prompts, max_sequence_length, device)
        elif prompt_attention_mask is None:
            prompt_attention_mask = torch.ones(prompt_embeds.shape[:2], dtype=torch.long)
        batch = prompt_embeds.shape[0]
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative_prompt = "" if negative_prompt is None else negative_prompt
            negatives = (
                [negative_prompt] * batch if isinstance(negative_prompt, str) else list(negative_prompt)
            )
            if len(negatives) != batch:
                raise ValueError(
                    f"{len(negatives)} negative prompts for {batch} prompts: give one each, or one"
                )
            negative_prompt_embeds, negative_prompt_attention_mask = self._encode_text(
                negatives, max_sequence_length, device
            )
        elif negative_prompt_embeds is not None and negative_prompt_attention_mask is None:
            negative_prompt_attention_mask = torch.ones(negative_prompt_embeds.shape[:2], dtype=torch.long)
        if not do_classifier_free_guidance:
            negative_prompt_embeds = negative_prompt_attention_mask = None

        def repeat(x: torch.Tensor | None, dtype=None) -> torch.Tensor | None:
            if x is None:
                return None
            return x.to(device, dtype or x.dtype).repeat_interleave(num_videos_per_prompt, dim=0)

        return (
            repeat(prompt_embeds, self.transformer.dtype),
            repeat(prompt_attention_mask),
            repeat(negative_prompt_embeds, self.transformer.dtype),
            repeat(negative_prompt_attention_mask),
        )

    # ----------------------------------------------------------------------------------------------- checks

    def check_inputs(
        self,
        height: int,
        width: int,
        num_frames: int,
        steps: int,
        strength: float,
        guidance_scale: float = 1.0,
    ) -> None:
        rule = self.shape_rule
        rule.check_size(height, width)
        rule.check_frames(num_frames)
        if steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {steps}")
        most = getattr(self.scheduler.config, "num_train_timesteps", None)
        if most is not None and steps > most:
            raise ValueError(
                f"num_inference_steps must be at most the scheduler's {most} timesteps, got {steps}"
            )
        if not np.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale}")
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if strength < 1 and int(steps * strength) < 1:  # video-to-video runs int(steps x strength) steps
            raise ValueError(
                f"strength {strength} x num_inference_steps {steps} leaves no denoising step: raise either "
                f"(at least {int(np.ceil(1 / strength))} steps at this strength)"
            )

    # ----------------------------------------------------------------------------------------------- sampling

    def _timesteps(
        self,
        steps: int,
        strength: float,
        device,
        tokens: int | None = None,
        stage_steps: list[int] | None = None,
    ) -> torch.Tensor:
        """The sampler's timesteps (`strength` < 1: the last part, video-to-video). A flow sampler saved with a
        token-count shift (`use_dynamic_shifting`) shifts for `tokens`, as training did; a pyramid sampler takes
        `stage_steps` (coarsest stage first) in place of the sampler's split of `steps`."""
        if self.pyramid is not None:
            self.scheduler.set_timesteps(steps, device=device, stage_steps=stage_steps)
            return self.scheduler.timesteps
        if stage_steps is not None:
            raise ValueError("stage_steps is for spatial-pyramid models; this model has one stage")
        if self.scheduler.config.get("use_dynamic_shifting"):
            self.scheduler.set_timesteps(
                steps, device=device, mu=Objective.for_scheduler(self.scheduler).token_shift.mu(tokens)
            )
        else:
            self.scheduler.set_timesteps(steps, device=device)
        timesteps = self.scheduler.timesteps
        if strength >= 1:
            return timesteps
        order = getattr(self.scheduler, "order", 1)
        start = (steps - min(int(steps * strength), steps)) * order
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start)
        return timesteps[start:]

    def _noise_to(self, clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Clean latents noised to timestep `t` (the start of a video-to-video run, or known frames)."""
        t = t.reshape(1)
        if prediction_type_of(self.scheduler) == "flow":
            return self.scheduler.scale_noise(clean, t, noise)
        return self.scheduler.add_noise(clean, noise, t)

    def _predict(self, latents, t, text, text_mask, condition, guidance_scale, **extra):
        """The model's noise / velocity prediction with classifier-free guidance (`extra`: CLIP tokens)."""
        do_cfg = guidance_scale > 1
        x = torch.cat([latents] * 2) if do_cfg else latents
        if hasattr(self.scheduler, "scale_model_input"):
            x = self.scheduler.scale_model_input(x, t)
        if condition is not None:
            x = torch.cat([x, torch.cat([condition] * x.shape[0])], dim=1)
        timestep = t.expand(x.shape[0]).to(x.device)
        model = self.expert_for(t)
        out = model(x.to(model.dtype), timestep, text, encoder_attention_mask=text_mask, **extra).sample
        return self._guided(out, guidance_scale)

    def _guided(self, out: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """The transformer's output for a guided batch (unconditional half first when `guidance_scale` > 1) ->
        the guided prediction, float32."""
        if out.shape[1] == 2 * self.latent_channels:  # PixArt's learned sigma: keep the prediction half
            out = out[:, : self.latent_channels]
        if guidance_scale > 1:
            uncond, cond = out.float().chunk(2)
            return uncond + guidance_scale * (cond - uncond)
        return out.float()

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] = "",
        num_frames: int = 17,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 6.0,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        start_image=None,
        end_image=None,
        head_frames: torch.Tensor | None = None,
        resize_to_start_image: bool = False,
        video=None,
        strength: float = 1.0,
        known_latents: torch.Tensor | None = None,
        keep_start_latent: bool = True,
        max_sequence_length: int = 120,
        stage_steps: list[int] | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, torch.Tensor, dict], dict] | PipelineCallback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ):
        """Generate. Text-to-video by default; `num_frames=1` is text-to-image.

        start_image / end_image / head_frames: keep these frames (inpaint models only). video + strength:
        video-to-video (any model). known_latents: clean latents for the first latent frames, re-imposed at
        every step (continuation with a plain t2v model, used by long videos). keep_start_latent: when frame 0
        is kept (start image, head frames), also re-impose its latent frame (the causal VAE encodes frame 0
        alone), so frame 0 comes out as the VAE's reconstruction of it, not the model's regeneration.
        prompt_embeds / negative_prompt_embeds (+ attention masks): text features in place of prompts.
        stage_steps: a spatial-pyramid model's steps per stage, coarsest first (default: num_inference_steps
        split as its sampler's saved `stage_steps`, else evenly).
        callback_on_step_end(pipe, step, timestep, callback_kwargs) after every step, with the tensors named in
        callback_on_step_end_tensor_inputs (default: latents); what it returns replaces them.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        unknown = [k for k in callback_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {unknown}: choose from {self._callback_tensor_inputs}"
            )
        if num_videos_per_prompt < 1:
            raise ValueError(f"num_videos_per_prompt must be >= 1, got {num_videos_per_prompt}")
        if start_image is not None and resize_to_start_image:
            size = getattr(start_image, "size", None)
            if isinstance(start_image, str):
                from PIL import Image

                with Image.open(start_image) as im:
                    size = im.size
            f = self.size_factor
            width, height = (max(f, round(s / f) * f) for s in size)
        height = height or self.default_size
        width = width or self.default_size
        if video is None and strength < 1:
            raise ValueError("strength < 1 needs an input video (video-to-video)")
        self.check_inputs(height, width, num_frames, num_inference_steps, strength, guidance_scale)
        wants_inpaint = start_image is not None or end_image is not None or head_frames is not None
        temporal = self.temporal_pyramid
        if temporal is not None and (video is not None or known_latents is not None or end_image is not None
                                     or head_frames is not None):  # fmt: skip
            raise ValueError(
                "an autoregressive model generates frame by frame from text or from a start image: video-to-video, "
                "known latents, end images and head frames are not supported with it"
            )
        if wants_inpaint and not self.is_inpaint_model and temporal is None:
            raise ValueError(
                "start/end images need an image-to-video (InP) transformer with in_channels = 2*C + 1 (or 3*C); "
                f"this one has in_channels={self.transformer.config.in_channels}"
            )
        if self.pyramid is not None and temporal is None and (video is not None or known_latents is not None
                                                              or wants_inpaint):  # fmt: skip
            raise ValueError(
                "a spatial-pyramid model starts from noise at its coarsest stage: video-to-video, known latents "
                "and start/end images are not supported with it"
            )
        device = self._execution_device

        # text
        do_cfg = guidance_scale > 1
        prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask = (
            self.encode_prompt(
                prompt,
                negative_prompt,
                do_cfg,
                num_videos_per_prompt,
                device,
                prompt_embeds,
                negative_prompt_embeds,
                prompt_attention_mask,
                negative_prompt_attention_mask,
                max_sequence_length,
            )
        )
        batch = prompt_embeds.shape[0]
        self.maybe_free_model_hooks_for("text_encoder")

        def guided_text() -> tuple[torch.Tensor, torch.Tensor]:
            """What the transformer reads: with guidance, the unconditional half first."""
            if not do_cfg:
                return prompt_embeds, prompt_attention_mask
            return (
                torch.cat([negative_prompt_embeds, prompt_embeds]),
                torch.cat([negative_prompt_attention_mask, prompt_attention_mask]),
            )

        text, text_mask = guided_text()  # built once; again only when a callback replaces the embeddings

        if temporal is not None:  # frame by frame, each from the compressed history (autoregressive.py)
            from .autoregressive import generate_autoregressive

            start = None
            if start_image is not None:  # the causal VAE encodes frame 0 alone: its latent is the first frame
                image = load_image(start_image, height, width)[None, :, None].to(device)
                start = self.vae.encode_latents(image).float()[:, :, 0].expand(batch, -1, -1, -1)
            latents = generate_autoregressive(
                self, temporal, (batch, self.latent_channels, self.vae.latent_frames(num_frames), height, width),
                guided_text(), guidance_scale, num_inference_steps, stage_steps, generator, start,
                callback_on_step_end, callback_inputs,
            )  # fmt: skip
            return self._finish(latents, output_type, return_dict)

        # conditioning for inpaint models: known frames + mask (everything to generate when none is given)
        condition = None
        if self.is_inpaint_model:
            cond_video, mask = conditioning_video(
                num_frames,
                height,
                width,
                start=load_image(start_image, height, width) if start_image is not None else None,
                end=load_image(end_image, height, width) if end_image is not None else None,
                head=head_frames,
            )
            if self.inpaint_kind == "upstream":
                # nothing kept: zeros, as upstream (below). No latent is re-imposed: with 8k frames the first
                # latent also holds frames 1-3
                if wants_inpaint:
                    condition = torch.cat(upstream_inpaint_latents(self.vae, cond_video, mask), 1).to(device)
            else:
                mask_latent, masked = inpaint_latents(self.vae, cond_video, mask)
                condition = torch.cat([mask_latent, masked], dim=1).to(device)
                if keep_start_latent and known_latents is None and not mask_latent[:, :, 0].any():
                    known_latents = masked[:, :, :1]  # frame 0 is wholly kept (start image or head frames)
        clip_tokens = None
        if getattr(self.transformer, "clip_projection", None) is not None:
            if start_image is not None and self.image_encoder is None:
                logger.warning("this model takes CLIP image tokens, but the pipeline has no image_encoder")
            encoder = (self.image_encoder, self.feature_extractor)
            clip_tokens = ClipTokens(self.transformer, *encoder, start_image, batch, device)

        # latents
        s = self.vae.spatial_compression_ratio
        shape = (batch, self.latent_channels, self.vae.latent_frames(num_frames), height // s, width // s)
        p = self.transformer.config.patch_size
        timesteps = self._timesteps(
            num_inference_steps, strength, device, shape[2] * (shape[3] // p) * (shape[4] // p), stage_steps
        )
        if self.pyramid is not None:  # sampling starts at the coarsest stage's size
            shape = self.scheduler.initial_shape(shape)
        if self.inpaint_kind == "upstream" and condition is None:
            c = self.latent_channels
            condition = torch.zeros(1, 2 * c, *shape[2:], device=device)
        noise = latents if latents is not None else randn_tensor(shape, generator=generator, device=device)
        noise = noise.to(device, torch.float32)
        if video is not None:
            clip = load_video(video, height, width, num_frames)[None]
            clean = self.vae.encode_latents(clip).float().to(device).expand(batch, -1, -1, -1, -1)
            latents = self._noise_to(clean, noise, timesteps[:1])
        else:
            sigma = getattr(self.scheduler, "init_noise_sigma", 1.0)
            latents = noise * sigma

        # denoise
        known_noise = None
        if known_latents is not None:
            known_latents = known_latents.to(device, torch.float32)
            known_noise = randn_tensor(known_latents.shape, generator=generator, device=device)
        step_kwargs = (
            {"generator": generator}
            if "generator" in inspect.signature(self.scheduler.step).parameters
            else {}
        )
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                if known_latents is not None:  # re-impose the known head, noised to this step
                    k = known_latents.shape[2]
                    latents[:, :, :k] = self._noise_to(known_latents, known_noise, t)
                extra = clip_tokens.inputs(i, len(timesteps), do_cfg) if clip_tokens else {}
                pred = self._predict(latents, t, text, text_mask, condition, guidance_scale, **extra)
                latents = self.scheduler.step(pred, t, latents, return_dict=False, **step_kwargs)[0]
                if callback_on_step_end is not None:
                    values = {"latents": latents, "prompt_embeds": prompt_embeds}
                    values["negative_prompt_embeds"] = negative_prompt_embeds
                    returned = callback_on_step_end(self, i, t, {k: values[k] for k in callback_inputs}) or {}
                    latents = returned.pop("latents", latents)
                    if "prompt_embeds" in returned or "negative_prompt_embeds" in returned:
                        prompt_embeds = returned.pop("prompt_embeds", prompt_embeds)
                        negative_prompt_embeds = returned.pop(
                            "negative_prompt_embeds", negative_prompt_embeds
                        )
                        text, text_mask = guided_text()
                bar.update()
        if known_latents is not None:
            latents[:, :, : known_latents.shape[2]] = known_latents
        return self._finish(latents, output_type, return_dict)

    def _finish(self, latents: torch.Tensor, output_type: str, return_dict: bool):
        """Denoised latents -> the requested output (decoded unless "latent")."""
        self.maybe_free_model_hooks_for("transformer")
        if not torch.isfinite(latents).all():  # decoded, these are black frames that look like a result
            raise FloatingPointError(
                "the denoised latents are not finite (NaN or inf): check guidance_scale, the LoRA weight and "
                "the model's weights"
            )

        if output_type == "latent":
            frames = latents
        else:
            frames = self.decode_latents(latents)
            if output_type == "np":
                frames = frames.permute(0, 2, 3, 4, 1).cpu().numpy()
            elif output_type == "pil":
                from PIL import Image

                arrays = (frames.permute(0, 2, 3, 4, 1).cpu().numpy() * 255).round().astype(np.uint8)
                frames = [[Image.fromarray(f) for f in video_frames] for video_frames in arrays]
            elif output_type != "pt":
                raise ValueError(f"output_type must be np, pt, pil or latent, got {output_type!r}")
        self.maybe_free_model_hooks()
        return EasyAnimateOutput(frames=frames) if return_dict else (frames,)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> video `(B, 3, F, H, W)` in [0, 1]."""
        video = self.vae.decode_latents(latents)
        return ((video.float() + 1) / 2).clamp(0, 1)

    def maybe_free_model_hooks_for(self, name: str) -> None:
        """With model CPU offload, move a finished component off the GPU now (the text encoder after
        encoding) instead of when the next one is called."""
        module = getattr(self, name, None)
        hook = getattr(module, "_hf_hook", None)
        if hook is not None and hasattr(hook, "offload"):
            hook.offload()
