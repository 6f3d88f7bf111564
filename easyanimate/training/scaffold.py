"""What every trainer (DiT, VAE) does around its step: accelerator set-up, resume, NaN guard, cadence.

run = RunScaffold(cfg, cfg.output_dir, seed=..., mixed_precision=..., gradient_accumulation_steps=...,
                  max_steps=..., checkpoint_every=..., keep=..., resume_from=...)
state = run.resume()                         # {} for a fresh run, else the saved trainer state
... run.check_finite(loss, step, logs) ... run.checkpoint(step, state) ... run.finish()
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import resource
import shutil
import time
from collections.abc import Callable
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import (
    DistributedType,
    FullyShardedDataParallelPlugin,
    InitProcessGroupKwargs,
    set_seed,
)

from ..config import save_config
from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint

logger = logging.getLogger(__name__)


REPORT_TO = ("tensorboard", "wandb", "none")
# the ranges of the settings every trainer has (DiT and VAE run configs), checked when a config loads
OPTIMIZATION_BOUNDS = dict(
    max_steps=(1, None),
    learning_rate=(0.0, None),
    weight_decay=(0.0, None),
    max_grad_norm=(0.0, None),
    gradient_accumulation_steps=(1, None),
)


def hparams(config: Any) -> dict[str, Any]:
    """A config flattened to dotted scalar keys (what trackers accept as hyperparameters)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[prefix + key] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk(dataclasses.asdict(config), "")
    return flat


def configure_deepspeed(accelerator: Accelerator, accumulation: int, micro_batch_size: int | None) -> None:
    """The run config is the one place for gradient accumulation and the micro-batch size: a DeepSpeed config
    that says otherwise is refused (it silently won before), and the micro-batch size is given to DeepSpeed
    (the trainer's sampler is not a DataLoader `prepare` could read it from)."""
    plugin = accelerator.state.deepspeed_plugin
    config = plugin.deepspeed_config
    theirs = config.get("gradient_accumulation_steps", "auto")
    if theirs not in ("auto", None) and int(theirs) != accumulation:
        raise ValueError(
            f"the DeepSpeed config's gradient_accumulation_steps is {theirs} but the run's "
            f"optimization.gradient_accumulation_steps is {accumulation}: set them equal (or 'auto' in the "
            "DeepSpeed config)"
        )
    config["gradient_accumulation_steps"] = accumulation
    if micro_batch_size is not None:
        config["train_micro_batch_size_per_gpu"] = micro_batch_size
        config["train_batch_size"] = micro_batch_size * accumulation * accelerator.num_processes


def fsdp_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def cpu_fsdp_plugin() -> FullyShardedDataParallelPlugin:
    """The launch config's FSDP plugin for CPU processes. accelerate 1.15 only selects FSDP on GPU-like devices
    and its plugin refuses to build without one when `sync_module_states` is on; every process loads the same
    weights from disk, so nothing needs syncing. The full state dict stays in place (offloading it to the CPU
    it is already on crashes torch's gather)."""
    os.environ["FSDP_SYNC_MODULE_STATES"] = "false"
    os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "false"
    return FullyShardedDataParallelPlugin()


def force_fsdp(accelerator: Accelerator, plugin: FullyShardedDataParallelPlugin) -> None:
    """Make a CPU multi-process accelerator an FSDP one: `prepare`, `save_state`, `load_state` and
    `clip_grad_norm_` then take their FSDP paths, as on GPUs. Both shared states hold the type (accelerate
    re-reads PartialState's)."""
    if plugin.state_dict_type.name == "FULL_STATE_DICT":
        # accelerate saves a full state dict with torch's offload-to-CPU gather, which crashes (SIGSEGV in
        # FSDP's state-dict clone, torch 2.13) when the weights already are in CPU memory
        raise ValueError(
            "fsdp_state_dict_type FULL_STATE_DICT cannot be saved by CPU processes (torch's offload-to-CPU "
            "gather crashes there): use SHARDED_STATE_DICT when training FSDP on CPU"
        )
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin


def init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Give a fresh optimizer its state tensors (a step with zero gradients at learning rate 0: no weight moves).
    accelerate 1.15 loads a sharded FSDP optimizer into the keys the optimizer already has, so a fresh AdamW
    (no state until its first step) resumed with none: its moments restarted at zero."""
    if optimizer.state:
        return
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    if any(p.grad is not None for p in params):
        return
    for p in params:
        p.grad = torch.zeros_like(p)
    rates = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    optimizer.step()
    for group, lr in zip(optimizer.param_groups, rates):
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)


RUN_MARKERS = ("config.yaml", "logs.jsonl", "checkpoints")


def claim_output_dir(output_dir: str, resume_from: str | None, overwrite: bool) -> list[str]:
    """A fresh run into a folder that holds another run is refused (it silently overwrote it and left a folder
    mixing both), unless it resumes or `overwrite` is set. Returns the old run's files to clear (overwrite)."""
    found = [m for m in RUN_MARKERS if os.path.exists(os.path.join(output_dir, m))]
    if not found or resume_from:
        return []
    if not overwrite:
        raise ValueError(
            f"output_dir {output_dir} already holds a run ({', '.join(found)}): resume it (resume_from=latest), "
            "choose another output_dir, or set overwrite=true to replace it"
        )
    return [os.path.join(output_dir, m) for m in found]


def is_due(step: int, every: int, max_steps: int) -> bool:
    """Every `every` steps and at the last step; `every <= 0` means at the last step only."""
    return step == max_steps or (every > 0 and step % every == 0)


class RunScaffold:
    def __init__(
        self,
        config: Any,
        output_dir: str,
        *,
        seed: int,
        mixed_precision: str,
        gradient_accumulation_steps: int,
        max_steps: int,
        checkpoint_every: int,
        keep: int,
        resume_from: str | None,
        report_to: str = "tensorboard",
        micro_batch_size: int | None = None,
        overwrite: bool = False,
    ):
        # accelerate keeps one global state per process; a second run in it (tests, notebooks) may use another
        # precision. The distributed PartialState is kept.
        AcceleratorState._reset_state()
        stale = claim_output_dir(output_dir, resume_from, overwrite)
        if report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {REPORT_TO}, got {report_to!r}")
        if report_to == "wandb":
            try:
                import wandb  # noqa: F401
            except ImportError as err:
                raise ImportError(
                    "report_to=wandb needs wandb: pip install wandb (or report_to=tensorboard)"
                ) from err
        self.report_to = report_to
        # without CUDA, DeepSpeed's own process-group set-up finds no backend and every process believes it is
        # alone: gloo (a single plain process must not be given a backend: it has no process group)
        deepspeed_on_cpu = (
            os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true" and not torch.cuda.is_available()
        )
        handlers = [InitProcessGroupKwargs(backend="gloo")] if deepspeed_on_cpu else []
        # FSDP on CPU processes (gloo): the launch config's plugin, applied by hand (see cpu_fsdp_plugin)
        plugin = cpu_fsdp_plugin() if fsdp_requested() and not torch.cuda.is_available() else None
        self.accelerator = Accelerator(
            mixed_precision=mixed_precision,
            gradient_accumulation_steps=gradient_accumulation_steps,
            log_with=None if report_to == "none" else report_to,
            project_dir=output_dir,
            kwargs_handlers=handlers,
            fsdp_plugin=plugin,
        )
        self.fsdp_on_cpu = plugin is not None and self.accelerator.num_processes > 1
        if self.fsdp_on_cpu:
            force_fsdp(self.accelerator, plugin)
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            configure_deepspeed(self.accelerator, gradient_accumulation_steps, micro_batch_size)
        acc = self.accelerator
        self.main, self.device, self.rank = acc.is_main_process, acc.device, acc.process_index
        self.output_dir, self.max_steps = output_dir, max_steps
        self.checkpoint_every, self.keep, self.resume_from = checkpoint_every, keep, resume_from
        logger.info(
            "process %d of %d (%s) on %s, mixed precision %s",
            self.rank,
            acc.num_processes,
            acc.distributed_type,
            self.device,
            acc.mixed_precision,
        )
        if self.main:  # overwrite=true: the old run's checkpoints and logs go before anything is written
            for path in stale:
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        acc.wait_for_everyone()
        os.makedirs(output_dir, exist_ok=True)
        if self.main:
            save_config(config, os.path.join(output_dir, "config.yaml"))
        # the run's hyperparameters beside its curves (tensorboard: <output_dir>/tensorboard)
        acc.init_trackers(
            "tensorboard" if report_to == "tensorboard" else "easyanimate", config=hparams(config)
        )
        set_seed(seed)
        self._step_started = time.perf_counter()
        self.resumed_from: str | None = None  # the checkpoint `resume` loaded

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP on CPU: wrap `model` with the launch config's plugin here (accelerate's own wrapping asks for an
        accelerator device); `prepare` then keeps the wrapper. Anything else: `model` as it is. With
        `use_orig_params` the parameters stay the same objects, so an optimizer built on them still works."""
        if not self.fsdp_on_cpu:
            return model
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        plugin = self.accelerator.state.fsdp_plugin
        plugin.set_auto_wrap_policy(model)
        return FSDP(
            model,
            sharding_strategy=plugin.sharding_strategy,
            auto_wrap_policy=plugin.auto_wrap_policy,
            mixed_precision=plugin.mixed_precision_policy,
            use_orig_params=plugin.use_orig_params,
            device_id=torch.device("cpu"),
        )

    def clip_grad_norm(self, prepared, params: list[torch.Tensor], max_norm: float):
        """The global gradient norm, clipped. FSDP: the root wrapper's own clipping over every shard (accelerate
        falls back to a local, per-shard norm when `params` is not all of the model's parameters)."""
        if self.accelerator.distributed_type == DistributedType.FSDP and hasattr(prepared, "clip_grad_norm_"):
            return prepared.clip_grad_norm_(max_norm)
        return self.accelerator.clip_grad_norm_(params, max_norm)

    def resume(self, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
        """Load the checkpoint asked for (accelerate state); its trainer state, or {} for a fresh run.
        `optimizer` (the prepared one) gets its state tensors first under FSDP, so they are loaded into."""
        path = resolve_resume(self.output_dir, self.resume_from)
        self.resumed_from = path
        if not path:
            return {}
        if optimizer is not None and self.accelerator.distributed_type == DistributedType.FSDP:
            init_optimizer_state(getattr(optimizer, "optimizer", optimizer))
        state = load_checkpoint(self.accelerator, path)
        logger.info("resumed from %s at step %d", path, state["step"])
        return state

    def check_finite(self, loss: torch.Tensor, step: int, details: Any = None, what: str = "loss") -> None:
        """Stop before a non-finite loss updates anything: the last checkpoint stays the good one."""
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite {what} at step {step} ({details if details is not None else loss.item()}); "
                f"no update was applied, the last checkpoint in {self.output_dir} is intact"
            )

    def due(self, step: int, every: int) -> bool:
        return is_due(step, every, self.max_steps)

    def checkpoint(
        self,
        step: int,
        state: Callable[[], dict[str, Any]],
        write_extra: Callable[[str], None] | None = None,
    ) -> str | None:
        """Write a checkpoint when one is due (every `checkpoint_every` steps and at the end); `state()` gives
        the trainer state to record (called on every process only then: it may gather); `write_extra(folder)`
        (every process) adds files before the checkpoint is renamed into place."""
        if not self.due(step, self.checkpoint_every):
            return None
        return save_checkpoint(self.accelerator, self.output_dir, step, state(), self.keep, write_extra)

    @contextlib.contextmanager
    def whole_weights_loading(self):
        """Load frozen models (VAE, text encoder) whole: under DeepSpeed, transformers' `from_pretrained` would
        otherwise partition them for ZeRO-3, though no engine ever gathers them (T5 then fails in forward)."""
        if self.accelerator.distributed_type != DistributedType.DEEPSPEED:
            yield
            return
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
        try:
            yield
        finally:
            self.accelerator.state.deepspeed_plugin.set_deepspeed_weakref()

    @property
    def sharded(self) -> bool:
        """Whether no process holds whole weights (DeepSpeed ZeRO-3, FSDP): validation and export then gather."""
        acc = self.accelerator
        if acc.distributed_type == DistributedType.FSDP:
            return True
        return (
            acc.distributed_type == DistributedType.DEEPSPEED and acc.state.deepspeed_plugin.zero_stage == 3
        )

    def full_model(self, prepared, unwrapped):
        """On every process (a collective when sharded): the main process gets a model with whole weights (the
        unwrapped model itself when it already has them), the others None."""
        if not self.sharded:
            return unwrapped if self.main else None
        if self.accelerator.distributed_type == DistributedType.FSDP:
            state = self._fsdp_full_state(prepared)
        else:
            state = self.accelerator.get_state_dict(prepared)  # gathered onto the main process
        if not self.main:
            return None
        full = type(unwrapped).from_config(unwrapped.config)
        full.load_state_dict({k: v.float() for k, v in state.items()})
        return full.to(self.device)

    def _fsdp_full_state(self, prepared) -> dict[str, torch.Tensor]:
        """FSDP's full state dict on the main process (offloaded to CPU memory when on a GPU)."""
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        config = FullStateDictConfig(offload_to_cpu=self.device.type != "cpu", rank0_only=True)
        with FSDP.state_dict_type(prepared, StateDictType.FULL_STATE_DICT, config):
            return prepared.state_dict()

    def step_metrics(self, samples: int) -> dict[str, float]:
        """Throughput since the last call (`samples` on every process together) and peak memory so far."""
        now = time.perf_counter()
        seconds, self._step_started = now - self._step_started, now
        if torch.cuda.is_available():
            peak = torch.cuda.max_memory_allocated() / 2**30
        else:  # CPU runs: the process's peak resident memory (ru_maxrss is in KiB on Linux)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        return {"perf/samples_per_second": samples / max(seconds, 1e-9), "perf/peak_memory_gb": peak}

    def log_images(self, tag: str, images: torch.Tensor, step: int) -> None:
        """`(N, 3, H, W)` in [0, 1] to the trackers that take images."""
        if self.report_to == "tensorboard":
            self.accelerator.get_tracker("tensorboard", unwrap=True).add_images(tag, images.cpu(), step)
        elif self.report_to == "wandb":
            import wandb

            arrays = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype("uint8")
            self.accelerator.log({tag: [wandb.Image(a) for a in arrays]}, step=step)

    def finish(self) -> None:
        """End trackers, then tear the process group down together: a rank that left while the main process
        was still exporting aborted at interpreter exit ("terminate called without an active exception",
        exit -6, seen once in a clean-clone CI run of the FSDP tests)."""
        self.accelerator.end_training()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self.accelerator.wait_for_everyone()
            torch.distributed.destroy_process_group()
