"""The sampler of a spatial-pyramid flow model: Euler steps inside each stage, renoised upsampling between them.

A diffusers scheduler (`SchedulerMixin`, `ConfigMixin`), saved in the model folder with the stage layout the
model was trained with, so a pipeline loads it like any other sampler. It starts from noise at the coarsest
size (`initial_shape`) and its `step` returns a latent twice as large at each stage jump (see `pyramid.py`).

    scheduler.set_timesteps(24)                       # 8 + 8 + 8 steps over 3 stages
    scheduler.set_timesteps(stage_steps=[12, 8, 4])   # coarsest stage first
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

from .pyramid import PyramidSchedule, renoise_up


@dataclass(frozen=True)
class _Step:
    stage: int
    level: float
    next_level: float
    last_of_stage: bool


def split_steps(total: int, stages: int, shares: list[int] | None = None) -> list[int]:
    """`total` steps over `stages` stages, coarsest first: evenly, or in proportion to `shares` (a model's default
    split, e.g. [17, 8]) with at least one step each; the remainder goes to the coarse (cheap) stages."""
    if total < stages:
        raise ValueError(
            f"a {stages}-stage pyramid needs at least {stages} steps (one per stage), got {total}"
        )
    if shares is None:
        base, extra = divmod(total, stages)
        return [base + (1 if i < extra else 0) for i in range(stages)]
    counts = [max(1, total * s // sum(shares)) for s in shares]
    for i in range(total - sum(counts)):  # what rounding down left (fewer than `stages`), coarsest first
        counts[i] += 1
    while sum(counts) > total:  # the one-step floor took some: from the largest stage
        counts[counts.index(max(counts))] -= 1
    return counts


class PyramidFlowScheduler(SchedulerMixin, ConfigMixin):
    """Euler sampling of a pyramid flow model (velocity `dz/ds`, noise level `s` from 1 to 0)."""

    order = 1
    init_noise_sigma = 1.0

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        stages: int = 3,
        boundaries: list[float] | None = None,
        stage_steps: list[int] | None = None,
    ):
        self.schedule = PyramidSchedule(stages, None if boundaries is None else tuple(boundaries))
        self._steps: list[_Step] = []
        self.timesteps = torch.zeros(0)
        self._step_index = 0

    @property
    def stages(self) -> int:
        return self.schedule.stages

    def initial_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The noise to start from for a final latent of `shape`: the coarsest stage's size."""
        self.schedule.check_size(shape[-2], shape[-1])
        c = self.schedule.coarsest
        return (*shape[:-2], shape[-2] // c, shape[-1] // c)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        stage_steps: list[int] | None = None,
        **_,
    ) -> None:
        """`stage_steps` (coarsest stage first), else `num_inference_steps` split as the config's `stage_steps`
        split theirs (the model's default, e.g. [17, 8]: most steps at the cheap coarse stage), else evenly."""
        default = self.config.stage_steps
        if stage_steps is None and default is not None:
            if num_inference_steps is None or int(num_inference_steps) == sum(default):
                stage_steps = default
            else:
                stage_steps = split_steps(int(num_inference_steps), self.stages, [int(n) for n in default])
        if stage_steps is not None:
            stage_steps = [int(n) for n in stage_steps]
            if len(stage_steps) != self.stages or min(stage_steps) < 1:
                raise ValueError(
                    f"stage_steps needs {self.stages} positive counts (coarsest stage first), got {stage_steps}"
                )
        else:
            if num_inference_steps is None:
                raise ValueError("give num_inference_steps or stage_steps")
            stage_steps = split_steps(int(num_inference_steps), self.stages)
        steps = []
        for i, n in enumerate(stage_steps):
            k = self.stages - 1 - i
            lo, hi = self.schedule.window(k)
            levels = torch.linspace(hi, lo, n + 1).tolist()
            steps += [_Step(k, levels[j], levels[j + 1], j == n - 1) for j in range(n)]
        self._steps = steps
        self.num_inference_steps = len(steps)
        self.timesteps = torch.tensor(
            [s.level * self.config.num_train_timesteps for s in steps], dtype=torch.float32, device=device
        )
        self._step_index = 0

    @property
    def stage_steps(self) -> list[int]:
        """The steps of the last `set_timesteps` per stage, coarsest first."""
        return [sum(s.stage == k for s in self._steps) for k in reversed(range(self.stages))]

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def scale_noise(self, *_, **__):
        raise ValueError(
            "a pyramid flow model starts from noise at its coarsest stage: video-to-video (strength < 1) and "
            "re-imposed known frames are not supported; use image-to-video through its first frame instead"
        )

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """One Euler step; the last step of a stage also moves to the next stage's size."""
        if self._step_index >= len(self._steps):
            raise IndexError("step called more often than set_timesteps planned")
        s = self._steps[self._step_index]
        self._step_index += 1
        out = sample.float() + (s.next_level - s.level) * model_output.float()
        if s.last_of_stage and s.stage > 0:
            out = renoise_up(out, s.next_level, generator)
        out = out.to(sample.dtype)
        return SchedulerOutput(prev_sample=out) if return_dict else (out,)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
