"""Training objectives: epsilon, v-prediction (optionally zero terminal SNR) and flow matching.

Each turns clean latents, noise and a per-sample random draw into (model input, timestep for the model,
target, loss weight). The matching samplers: epsilon / v -> any diffusion sampler configured with the same
`prediction_type` and betas; flow -> "Flow" (FlowMatchEulerDiscreteScheduler, velocity = noise - x0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from .pyramid import PyramidSchedule, stage_noise
from .samplers import DIFFUSION_DEFAULTS, get_scheduler, objective_settings
from .temporal_pyramid import TemporalPyramid

OBJECTIVES = ("epsilon", "v_prediction", "flow")
# how flow training draws noise levels before the shift: logit-normal (SD3; few draws near 0 or 1), uniform, or
# high_noise: half the draws uniform in [HIGH_NOISE_FROM, 1], where layout and motion are decided
TIME_SAMPLING = ("logit_normal", "uniform", "high_noise")
HIGH_NOISE_SHARE, HIGH_NOISE_FROM = 0.5, 0.75


@dataclass(frozen=True)
class TokenShift:
    """A shift that grows with the token count (diffusers' dynamic shifting, as its Flux / SD3 pipelines compute
    it): `log(shift)` linear in tokens, from `base_shift` at `base_tokens` to `max_shift` at `max_tokens`. The
    saved sampler gets the same four numbers (`use_dynamic_shifting`), so sampling shifts as training did."""

    base_shift: float = 0.5
    max_shift: float = 1.15
    base_tokens: int = 256
    max_tokens: int = 4096

    def mu(self, tokens: int) -> float:
        slope = (self.max_shift - self.base_shift) / (self.max_tokens - self.base_tokens)
        return self.base_shift + slope * (tokens - self.base_tokens)

    def shift(self, tokens: int) -> float:
        return math.exp(self.mu(tokens))

    def scheduler_config(self) -> dict[str, Any]:
        return dict(
            use_dynamic_shifting=True,
            base_shift=self.base_shift,
            max_shift=self.max_shift,
            base_image_seq_len=self.base_tokens,
            max_image_seq_len=self.max_tokens,
        )


def shift_levels(s: torch.Tensor, shift: float) -> torch.Tensor:
    """Noise levels in (0, 1) moved towards 1 by `shift` (SD3's resolution shift; 1: unchanged)."""
    return shift * s / (1 + (shift - 1) * s)


def sample_losses(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample, in fp32: `(B,)`."""
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(1)


@dataclass
class NoisedBatch:
    model_input: (
        torch.Tensor | list[torch.Tensor]
    )  # a list: an autoregressive model's history + present frame
    timesteps: torch.Tensor  # what the transformer sees (0..1000); (B, frames) for a frame list
    target: torch.Tensor
    weight: torch.Tensor  # per sample


def _after(history: list[torch.Tensor], present: NoisedBatch) -> NoisedBatch:
    """A noised present frame (or a chunk of frames, 5D) after its clean history: the frame list and per-frame
    levels (history at 0)."""
    n = present.target.shape[2] if present.target.ndim == 5 else 1
    levels = torch.zeros(present.target.shape[0], len(history) + n, device=present.target.device)
    levels[:, len(history) :] = present.timesteps.float()[:, None]
    return NoisedBatch([*history, present.model_input], levels, present.target, present.weight)


class Objective:
    def __init__(
        self,
        kind: str,
        zero_terminal_snr: bool = False,
        snr_gamma: float | None = None,
        flow_shift: float = 1.0,
        time_sampling: str = "logit_normal",
        token_shift: TokenShift | None = None,
        pyramid: PyramidSchedule | None = None,
        stage_weights: list[float] | None = None,
        stage_steps: list[int] | None = None,
        first_chunk_share: float = 0.5,
        history_noise: float = 0.0,
    ):
        if kind not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {kind!r}")
        if time_sampling not in TIME_SAMPLING:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLING}, got {time_sampling!r}")
        if token_shift is not None and flow_shift != 1.0:
            raise ValueError("give a fixed flow_shift or a token-count shift, not both")
        if pyramid is not None and (kind != "flow" or token_shift is not None or flow_shift != 1.0):
            raise ValueError(
                "a pyramid is a flow objective whose stage windows set the noise levels: no shift"
            )
        self.kind, self.snr_gamma, self.flow_shift = kind, snr_gamma, flow_shift
        self.pyramid = pyramid
        if stage_weights is not None and (pyramid is None or len(stage_weights) != pyramid.stages):
            raise ValueError("stage_weights needs a pyramid and one weight per stage")
        self.stage_weights = None if stage_weights is None else torch.tensor(stage_weights, dtype=torch.float)
        self.stage_steps = stage_steps  # the saved sampler's default split (see PyramidFlowScheduler)
        self.temporal: TemporalPyramid | None = None  # set by `autoregressive` for frame-by-frame models
        if not 0 <= first_chunk_share <= 1:
            raise ValueError(f"first_chunk_share must be in [0, 1], got {first_chunk_share}")
        self.first_chunk_share = first_chunk_share  # chunked models: how often the first chunk is forced
        if not 0 <= history_noise <= 1:
            raise ValueError(f"history_noise must be in [0, 1], got {history_noise}")
        self.history_noise = history_noise  # autoregressive models: most noise mixed into the history
        self.time_sampling, self.token_shift = time_sampling, token_shift
        self.zero_terminal_snr = zero_terminal_snr
        if kind != "flow":
            self.scheduler = DDPMScheduler(
                **DIFFUSION_DEFAULTS, prediction_type=kind, rescale_betas_zero_snr=zero_terminal_snr
            )

    @classmethod
    def for_scheduler(cls, scheduler) -> Objective:
        """The objective a pipeline's sampler was made for (its prediction type, zero-SNR choice, shift)."""
        settings = objective_settings(scheduler)
        if "pyramid" in settings:
            return cls("flow", pyramid=settings["pyramid"])
        dynamic = scheduler.config.get("use_dynamic_shifting") and settings["prediction_type"] == "flow"
        token_shift = None
        if dynamic:
            c = scheduler.config
            token_shift = TokenShift(c.base_shift, c.max_shift, c.base_image_seq_len, c.max_image_seq_len)
        return cls(
            settings["prediction_type"],
            zero_terminal_snr=settings.get("zero_terminal_snr", False),
            flow_shift=1.0 if dynamic else settings.get("shift", 1.0),
            token_shift=token_shift,
        )

    @property
    def default_sampler(self) -> str:
        if self.pyramid is not None:
            return "Pyramid"
        return "Flow" if self.kind == "flow" else "DPM++"

    def sampler(self, name: str | None = None):
        """Sampler `name` (None: this objective's default) configured for this objective: what validation
        and the saved pipeline use."""
        name = name or self.default_sampler
        if self.pyramid is not None:
            sampler = get_scheduler(name, "flow", pyramid=self.pyramid)
            if self.stage_steps is not None:
                sampler.register_to_config(stage_steps=list(self.stage_steps))
            return sampler
        if self.kind == "flow":
            dynamic = self.token_shift.scheduler_config() if self.token_shift else {}
            return get_scheduler(name, "flow", shift=self.flow_shift, **dynamic)
        return get_scheduler(name, self.kind, zero_terminal_snr=self.zero_terminal_snr)

    def flow_times(self, b: int, generator: torch.Generator, device=None) -> torch.Tensor:
        """`b` flow noise levels in (0, 1) before the shift, drawn as `time_sampling` says."""
        if self.time_sampling == "uniform":
            return torch.rand(b, generator=generator, device=device)
        s = torch.sigmoid(torch.randn(b, generator=generator, device=device))  # logit-normal
        if self.time_sampling == "high_noise":
            high = HIGH_NOISE_FROM + (1 - HIGH_NOISE_FROM) * torch.rand(b, generator=generator, device=device)
            pick = torch.rand(b, generator=generator, device=device) < HIGH_NOISE_SHARE
            s = torch.where(pick, high, s)
        return s

    def shift_for(self, tokens: int | None) -> float:
        """The flow shift for inputs of `tokens` transformer tokens (the fixed shift without a token shift)."""
        if self.token_shift is None:
            return self.flow_shift
        if tokens is None:
            raise ValueError("a token-count shift needs the number of tokens")
        return self.token_shift.shift(tokens)

    def autoregressive(self, temporal: TemporalPyramid | None) -> Objective:
        """This objective for a model that generates frame by frame (see `temporal_pyramid.py`)."""
        self.temporal = temporal
        return self

    def noise(
        self, x0: torch.Tensor, noise: torch.Tensor, generator: torch.Generator, tokens: int | None = None
    ) -> NoisedBatch:
        """Noised at random levels: for flow drawn by `time_sampling` then shifted (by the token count's shift
        when one is set: `tokens` per sample); uniform timesteps otherwise. An autoregressive objective noises one
        random frame (or chunk) of each clip and gives the clean, compressed frames before it as history (level 0)."""
        if self.temporal is not None and x0.ndim == 5:
            history, present, i = self.temporal.training_split(x0, generator, self.first_chunk_share)
            n = present.shape[2] if present.ndim == 5 else 1
            frame_tokens = None if tokens is None else tokens // x0.shape[2] * n
            present_noise = noise[:, :, i : i + n] if present.ndim == 5 else noise[:, :, i]
            noised = self._noise_one(present, present_noise, generator, frame_tokens)
            if self.history_noise > 0 and history:
                history = self.corrupt_history(history, generator)
            return _after(history, noised)
        return self._noise_one(x0, noise, generator, tokens)

    def corrupt_history(self, history: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        """Each sample's history frames mixed with fresh noise, `(1 - s) x + s n`, at a level `s` drawn uniformly
        from [0, history_noise] per sample, while the model is still told level 0 (as Pyramid Flow does): at
        inference its history is its own imperfect output, which it then learns not to copy blindly."""
        dev = generator.device
        s = torch.rand(history[0].shape[0], generator=generator, device=dev) * self.history_noise
        out = []
        for h in history:
            n = torch.randn(h.shape, generator=generator, device=dev).to(h)
            level = s.to(h).view(-1, *[1] * (h.ndim - 1))
            out.append((1 - level) * h + level * n)
        return out

    def _noise_one(
        self, x0: torch.Tensor, noise: torch.Tensor, generator: torch.Generator, tokens: int | None = None
    ) -> NoisedBatch:
        b = x0.shape[0]
        if self.pyramid is not None:
            return self.pyramid_noise(x0, noise, generator)
        if self.kind == "flow":
            level = shift_levels(self.flow_times(b, generator, x0.device), self.shift_for(tokens))
        else:
            steps = self.scheduler.config.num_train_timesteps
            t = torch.randint(0, steps, (b,), generator=generator, device=x0.device)
            level = t / (steps - 1)
        return self.noise_at(x0, noise, level)

    def pyramid_noise(
        self, x0: torch.Tensor, noise: torch.Tensor, generator: torch.Generator, stage: int | None = None
    ) -> NoisedBatch:
        """Pyramid flow: one stage for the micro-batch (one latent size per forward pass; drawn uniformly unless
        given, or by `stage_weights`), each sample at its own point of the stage's window (`time_sampling`), at the
        stage's size."""
        if stage is None and self.stage_weights is not None:
            weights = self.stage_weights.to(generator.device)
            stage = int(torch.multinomial(weights, 1, generator=generator))
        if stage is None:
            stage = int(
                torch.randint(self.pyramid.stages, (1,), generator=generator, device=generator.device)
            )
        return self._pyramid_point(x0, noise, stage, self.flow_times(x0.shape[0], generator, x0.device))

    def _pyramid_point(
        self, x0: torch.Tensor, noise: torch.Tensor, stage: int, u: torch.Tensor
    ) -> NoisedBatch:
        """Stage `stage` at fractions `u` `(B,)` of its window, from full-size `x0` and `noise`."""
        pyr = self.pyramid
        z, level, velocity = pyr.point(x0, stage_noise(noise, pyr.factor(stage)), stage, u)
        return NoisedBatch(z, level * 1000, velocity, torch.ones(x0.shape[0], device=x0.device))

    def noise_fixed(self, x0: torch.Tensor, noise: torch.Tensor, level: float) -> NoisedBatch:
        """Noised at one given level the way this objective trains: a spatial pyramid at the coarsest stage whose
        window holds `level`; frame by frame, the last frame after its clean compressed history (evaluation at
        fixed levels, e.g. caption sensitivity); with chunks, a clip that fits one chunk is its first chunk."""
        if self.temporal is not None and x0.ndim == 5:
            if 1 < x0.shape[2] <= self.temporal.chunk:
                return _after([], self._noise_fixed_one(x0, noise, level))
            history = self.temporal.compress(list(x0[:, :, :-1].unbind(2)))
            return _after(history, self._noise_fixed_one(x0[:, :, -1], noise[:, :, -1], level))
        return self._noise_fixed_one(x0, noise, level)

    def _noise_fixed_one(self, x0: torch.Tensor, noise: torch.Tensor, level: float) -> NoisedBatch:
        if self.pyramid is None:
            return self.noise_at(x0, noise, level)
        pyr = self.pyramid
        k = max(k for k in range(pyr.stages) if pyr.window(k)[0] <= level <= pyr.window(k)[1])
        lo, hi = pyr.window(k)
        return self._pyramid_point(
            x0, noise, k, torch.full((x0.shape[0],), (level - lo) / (hi - lo), device=x0.device)
        )

    def noise_at(self, x0: torch.Tensor, noise: torch.Tensor, level: torch.Tensor) -> NoisedBatch:
        """Noised at given levels `(B,)` in [0, 1]: the flow sigma, or timestep / (steps - 1) for diffusion."""
        b = x0.shape[0]
        level = torch.as_tensor(level, device=x0.device).float().expand(b)
        if self.kind == "flow":
            view = level.view(b, *([1] * (x0.ndim - 1))).to(x0.dtype)
            return NoisedBatch(
                (1 - view) * x0 + view * noise, level * 1000, noise - x0, torch.ones(b, device=x0.device)
            )
        sched = self.scheduler
        t = (level * (sched.config.num_train_timesteps - 1)).round().long()
        noisy = sched.add_noise(x0, noise, t)
        target = noise if self.kind == "epsilon" else sched.get_velocity(x0, noise, t)
        weight = torch.ones(b, device=x0.device)
        if self.snr_gamma is not None:  # min-SNR weighting (Hang et al. 2023)
            snr = compute_snr(sched, t).to(x0.device)
            clipped = torch.minimum(snr, torch.full_like(snr, self.snr_gamma))
            weight = clipped / snr if self.kind == "epsilon" else clipped / (snr + 1)
        return NoisedBatch(noisy, t, target, weight)

    def loss(self, prediction: torch.Tensor, batch: NoisedBatch) -> torch.Tensor:
        return (sample_losses(prediction, batch.target) * batch.weight).mean()
