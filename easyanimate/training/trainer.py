"""The one DiT training loop for every mode (t2i, t2v, lora, motion_lora, inpaint), on accelerate.

Read top to bottom: components -> what trains (the mode's strategy) -> data (bucket sampler) -> resume ->
loop (`step_loss`: encode, noise by the objective, predict, loss; then step) -> checkpoints / validation ->
outputs. What differs per mode lives in `strategies.py`; what every trainer does around its step in
`scaffold.py`. Randomness that shapes a step (noise, timesteps, VAE sampling, masks) is a pure function of
(seed, step, rank), and the sampler position is saved: a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from accelerate.utils import DistributedType
from diffusers.optimization import get_scheduler as get_lr_scheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.datasets import VideoDataset, collate
from ..data.video_io import save_video_tensor
from ..diffusion.objectives import Objective
from ..diffusion.temporal_pyramid import temporal_pyramid_of
from ..models.loading import load_transformer
from ..models.shape_rule import ShapeRule
from ..models.slice_vae import SliceVAE, scaled_posterior_sample
from ..models.text_encoder import TextEncoder, load_text_encoder
from ..pipeline.pipeline_easyanimate import EasyAnimatePipeline
from .cache import CachedLatents, collate_cached
from .config import TrainConfig
from .contrast import contrast_term
from .data import build_data, run_size_factor
from .randomness import step_generator
from .scaffold import RunScaffold
from .strategies import Strategy, strategy_of

logger = logging.getLogger(__name__)


def load_run_transformer(cfg: TrainConfig, caption_channels: int):
    """The transformer a run starts from: `model.transformer` (preset, PixArt or our folder), else the
    pipeline's own."""
    return load_transformer(
        cfg.model.transformer_source, caption_channels=caption_channels, **cfg.model.transformer_options
    )


def make_optimizer(params, cfg: TrainConfig):
    opt = cfg.optimization
    if opt.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise ImportError(
                "use_8bit_adam needs bitsandbytes (GPU machines): pip install bitsandbytes"
            ) from err
        return bnb.optim.AdamW8bit(params, lr=opt.learning_rate, weight_decay=opt.weight_decay)
    return torch.optim.AdamW(params, lr=opt.learning_rate, weight_decay=opt.weight_decay)


class TextFeatures:
    """Caption features for a batch: from the trainable encoder (prepared, with grad), or the frozen one with
    the last `cache_size` captions' features kept in CPU memory (0: no cache)."""

    def __init__(self, encoder: TextEncoder, trained=None, cache_size: int = 1024):
        self.encoder, self.trained, self.cache_size = encoder, trained, cache_size
        self._features: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.trained is not None:
            ids, mask = self.encoder.tokenize(captions)
            return self.trained(input_ids=ids, attention_mask=mask).last_hidden_state, mask
        if self.cache_size <= 0:
            return self.encoder(captions)
        unique = list(dict.fromkeys(captions))
        missing = [c for c in unique if c not in self._features]
        found = {c: self._features[c] for c in unique if c in self._features}
        if missing:
            feats, mask = self.encoder(missing)
            found.update({c: (feats[i].cpu(), mask[i].cpu()) for i, c in enumerate(missing)})
        for c in unique:  # most recently used last; the oldest leave once the cache is full
            self._features[c] = found[c]
            self._features.move_to_end(c)
        while len(self._features) > self.cache_size:
            self._features.popitem(last=False)
        device = self.encoder.model.device
        return (
            torch.stack([found[c][0] for c in captions]).to(device),
            torch.stack([found[c][1] for c in captions]).to(device),
        )


EMA_WEIGHTS, EMA_STATE = "ema.safetensors", "ema.json"


def save_ema(ema: EMAModel, folder: str) -> None:
    """The EMA shadow weights as safetensors and its counters as JSON (no pickle)."""
    state = ema.state_dict()
    shadow = state.pop("shadow_params")
    save_file(
        {f"shadow.{i}": t.detach().cpu().contiguous() for i, t in enumerate(shadow)},
        os.path.join(folder, EMA_WEIGHTS),
    )
    with open(os.path.join(folder, EMA_STATE), "w") as fh:
        json.dump({k: v for k, v in state.items() if isinstance(v, (int, float, bool)) or v is None}, fh)


def load_ema(ema: EMAModel, folder: str) -> None:
    """Restore what `save_ema` wrote; a checkpoint without it (an older, pickled one) is refused by name."""
    weights, counters = os.path.join(folder, EMA_WEIGHTS), os.path.join(folder, EMA_STATE)
    if not (os.path.isfile(weights) and os.path.isfile(counters)):
        raise FileNotFoundError(
            f"{folder} holds no {EMA_WEIGHTS} / {EMA_STATE} (EMA is on): it was written without EMA or by an "
            "older version that pickled it, which is not loaded (unpickling can run code)"
        )
    shadow = load_file(weights)
    with open(counters) as fh:
        state = json.load(fh)
    state["shadow_params"] = [shadow[f"shadow.{i}"] for i in range(len(shadow))]
    device = ema.shadow_params[0].device
    ema.load_state_dict(state)
    ema.to(device)


def weight_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype frozen models are held in: the run's compute dtype (T5-XXL: 9.5 GB in bf16, 19 GB in fp32)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)


def train(cfg: TrainConfig) -> dict[str, Any]:
    opt, ckpt = cfg.optimization, cfg.checkpointing
    run = RunScaffold(
        cfg,
        cfg.output_dir,
        seed=cfg.seed,
        mixed_precision=opt.mixed_precision,
        gradient_accumulation_steps=opt.gradient_accumulation_steps,
        max_steps=opt.max_steps,
        checkpoint_every=ckpt.steps,
        keep=ckpt.total_limit,
        resume_from=ckpt.resume_from,
        report_to=cfg.logging.report_to,
        micro_batch_size=cfg.data.batch_size,
        overwrite=cfg.overwrite,
    )
    accelerator, main, device, rank = run.accelerator, run.main, run.device, run.rank
    strategy = strategy_of(cfg)
    # what these launches cannot do, refused before anything is loaded
    if cfg.model.train_text_encoder and accelerator.distributed_type in (
        DistributedType.DEEPSPEED,
        DistributedType.FSDP,
    ):
        raise ValueError(
            "model.train_text_encoder is not supported under DeepSpeed or FSDP (they shard one model per run); "
            "train it with DDP, or keep the text encoder frozen"
        )
    if run.sharded and (opt.ema_decay is not None or not strategy.exports_pipeline):
        raise ValueError(
            "EMA and LoRA modes need whole weights on every process: use DDP or ZeRO-2 with them, not "
            "ZeRO-3 / FSDP"
        )

    # components: frozen VAE and text encoder, the transformer to train
    frozen_dtype = torch.float32 if cfg.model.train_text_encoder else weight_dtype(opt.mixed_precision)
    with run.whole_weights_loading():
        vae = SliceVAE.from_pretrained(os.path.join(cfg.model.pipeline, "vae"))
        text_encoder = load_text_encoder(
            cfg.model.pipeline, max_length=cfg.model.max_text_length, dtype=frozen_dtype, device=device
        )
    vae.to(device, weight_dtype(opt.mixed_precision)).eval().requires_grad_(False)
    transformer = load_run_transformer(cfg, text_encoder.hidden_size)
    strategy.prepare(transformer, vae)
    if cfg.model.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    temporal = temporal_pyramid_of(transformer.config)  # a frame-by-frame model: its history, compressed
    if temporal is not None and cfg.mode == "inpaint":
        raise ValueError(
            f"mode {cfg.mode!r} keeps full-clip conditions; autoregressive models train t2i / t2v"
        )
    shape = ShapeRule.of(vae, transformer).with_patch(run_size_factor(cfg))  # pyramids: every size whole
    if strategy.data != "image" and cfg.validation.prompts:
        shape.check_frames(cfg.validation.num_frames, "validation.num_frames")
    params = strategy.select_trainable(transformer, cfg.lora.rank, cfg.lora.alpha)
    if cfg.model.train_text_encoder:  # trained with the DiT (eval mode: no dropout); saved in the export
        text_encoder.model.requires_grad_(True)
        params += list(text_encoder.model.parameters())
    logger.info("training %d tensors (%.2fM parameters)", len(params), sum(p.numel() for p in params) / 1e6)
    objective = cfg.objective.build().autoregressive(temporal)
    optimizer = make_optimizer(params, cfg)
    lr_scheduler = get_lr_scheduler(
        opt.lr_scheduler, optimizer, num_warmup_steps=opt.lr_warmup_steps, num_training_steps=opt.max_steps
    )
    transformer = run.shard(transformer)  # FSDP on CPU processes; on GPUs `prepare` wraps
    transformer, optimizer, lr_scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)
    model = accelerator.unwrap_model(transformer)
    # prepared: its weights go into checkpoints and its gradients are synchronised; validation and export use
    # text_encoder (the same weights, unwrapped)
    trained_text = accelerator.prepare(text_encoder.model) if cfg.model.train_text_encoder else None
    text_features = TextFeatures(text_encoder, trained_text, cfg.data.text_cache_size)
    ema = None
    if opt.ema_decay is not None:
        ema = EMAModel([p.detach().float() for p in params], decay=opt.ema_decay)  # fp32 shadow weights
        # saved by us as safetensors + JSON (accelerate would pickle it: code could run on load)
        ema.to(device)

    # data: one shape per batch, disjoint shares per process, position saved with checkpoints
    records, sampler = build_data(cfg, strategy.data, shape, accelerator.num_processes, rank)
    if cfg.data.latent_cache:
        if strategy.uses_pixels:
            raise ValueError(f"mode {cfg.mode!r} needs pixels (it masks them): it cannot read a latent cache")
        # caption text for runs that encode it themselves: a text encoder that trains, or the contrast term
        wants_text = cfg.model.train_text_encoder or cfg.contrast.weight > 0
        captions = [r.text for r in records] if wants_text else None
        dataset = CachedLatents(cfg.data.latent_cache, cfg, strategy.data, captions)
        collate_fn = collate_cached
    else:
        dataset = VideoDataset(
            records,
            caption_dropout=cfg.data.caption_dropout,
            frame_stride=cfg.data.frame_stride,
            random_crop=cfg.data.random_crop,
            seed=cfg.seed,
        )
        collate_fn = collate

    # resume
    state = run.resume(optimizer)
    if ema is not None and run.resumed_from:
        load_ema(ema, run.resumed_from)
    step, epoch, skipped = state.get("step", 0), state.get("epoch", 0), state.get("skipped", 0)
    position = state["position"][rank] if state else 0
    start_step = step

    def batches():
        nonlocal epoch, position
        while True:
            sampler.load_state_dict({"epoch": epoch, "position": position, "seed": cfg.seed})
            dataset.set_epoch(epoch)
            loader = DataLoader(
                dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=cfg.data.num_workers
            )
            for batch in loader:
                position += 1
                yield batch
            epoch, position = epoch + 1, 0

    contrast_seen: list[torch.Tensor] = []  # this step's contrast terms (one per micro-batch), for the logs

    def step_loss(batch: dict, micro: int) -> tuple[torch.Tensor, tuple[int, ...]]:
        """One micro-batch's loss: latents (sampled from the VAE or the cache), noised by the objective, the
        mode's extra inputs, the transformer's prediction."""
        gen = step_generator(cfg.seed, micro, rank, device)
        pixels = None
        if cfg.data.latent_cache:  # sample the cached posterior exactly as the VAE's own sampling does
            latents = scaled_posterior_sample(vae, batch["mean"].to(device), batch["std"].to(device), gen)
            captions = batch.get("captions")
            if trained_text is not None:
                text, text_mask = text_features(captions)
            else:
                text, text_mask = batch["text"].to(device), batch["text_mask"].to(device)
        else:
            pixels = batch["pixels"].to(device)
            with torch.no_grad():
                latents = vae.encode_latents(pixels, generator=gen, sample=True).float()
            captions = batch["text"]
            text, text_mask = text_features(captions)  # the frozen encoder runs without grad
        noise = torch.randn(latents.shape, generator=gen, device=device)
        patch = model.config.patch_size
        tokens = latents.shape[2] * (latents.shape[3] // patch) * (latents.shape[4] // patch)
        noised = objective.noise(latents, noise, gen, tokens=tokens)
        model_input = noised.model_input
        extra = strategy.condition(vae, pixels, np.random.default_rng([cfg.seed, micro, rank]), cfg.masks)
        if extra is not None:
            model_input = torch.cat([model_input, extra], dim=1)
        # the model's own dtype: a no-op under DDP's autocast, bf16 under DeepSpeed (whose engine holds bf16
        # weights and does no autocast)
        dtype = model.dtype
        model_input = (
            [x.to(dtype) for x in model_input] if isinstance(model_input, list) else model_input.to(dtype)
        )
        pred = transformer(
            model_input, noised.timesteps, text.to(dtype), encoder_attention_mask=text_mask
        ).sample
        loss = objective.loss(pred[:, : latents.shape[1]], noised)  # learned-sigma half not trained
        if cfg.contrast.weight > 0:
            term = contrast_term(
                lambda x, t, feats, mask: (
                    transformer(x, t, feats.to(dtype), encoder_attention_mask=mask).sample
                ),
                model_input,
                noised,
                pred[:, : latents.shape[1]],
                captions,
                text_features,
                cfg.contrast,
            )
            contrast_seen.append(term.detach())
            loss = loss + cfg.contrast.weight * term
        return loss, tuple(latents.shape[2:])

    def trainer_state() -> dict[str, Any]:  # what a checkpoint records beside accelerate's state
        positions = accelerator.gather(torch.tensor([position], device=device)).tolist()
        return {"epoch": epoch, "position": positions, "skipped": skipped}

    def with_inference_weights(use) -> None:
        """On every process: `use(model)` on the main process with the weights inference sees (EMA when on,
        gathered when sharded)."""
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        full = run.full_model(transformer, model)
        if main:
            use(full)
        if ema is not None:
            ema.restore(params)

    def save_for_inference(folder: str) -> None:  # every checkpoint also serves inference (and holds the EMA)
        if ema is not None and main:
            save_ema(ema, folder)
        with_inference_weights(lambda m: strategy.save_for_inference(m, folder))

    samples_per_step = cfg.data.batch_size * opt.gradient_accumulation_steps * accelerator.num_processes
    logged_step, grad_norm = step, None
    validating = bool(cfg.validation.prompts) and cfg.validation.steps > 0  # steps 0 or no prompts: off
    history: list[dict[str, float]] = []
    data = batches()
    bar = tqdm(total=opt.max_steps, initial=step, disable=not main, desc=f"train {cfg.mode}")
    transformer.train()
    while step < opt.max_steps:
        for _ in range(opt.gradient_accumulation_steps):
            batch = next(data)
            skipped += len(batch["skipped"])
            if cfg.logging.sample_indices:
                with open(os.path.join(cfg.output_dir, f"samples_rank{rank}.jsonl"), "a") as fh:
                    fh.write(json.dumps({"step": step, "indices": batch["index"]}) + "\n")
            micro = step * opt.gradient_accumulation_steps + position  # unique per micro-batch
            with accelerator.accumulate(transformer), accelerator.autocast():
                loss, latent_shape = step_loss(batch, micro)
                run.check_finite(loss, step)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = run.clip_grad_norm(transformer, params, opt.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(params)
        step += 1
        logs = {"loss": loss.item(), "lr": lr_scheduler.get_last_lr()[0], "data/skipped": skipped}
        if contrast_seen:  # the caption contrast term's shortfall, before its weight (0: the margin is met)
            logs["contrast"] = float(torch.stack(contrast_seen).mean())
            contrast_seen.clear()
        if grad_norm is not None:
            logs["grad_norm"] = float(grad_norm)
        history.append(logs)
        bar.update(1)
        bar.set_postfix(loss=f"{logs['loss']:.4f}", shape=latent_shape)
        if run.due(step, cfg.logging.steps):
            perf = run.step_metrics(samples_per_step * (step - logged_step))
            logged_step = step
            scalars = {f"train/{k}" if "/" not in k else k: v for k, v in logs.items()}
            accelerator.log({**scalars, **perf}, step=step)
            if main:  # the same scalars as plain text, one JSON line per logged step
                with open(os.path.join(cfg.output_dir, "logs.jsonl"), "a") as fh:
                    fh.write(json.dumps({"step": step, **scalars, **perf}) + "\n")
        run.checkpoint(step, trainer_state, save_for_inference)
        if validating and run.due(step, cfg.validation.steps):
            full = run.full_model(transformer, model)  # every process: a gather when sharded
            if main:
                validate(cfg, strategy, vae, text_encoder, full, objective, step, run)
            transformer.train()
    bar.close()

    accelerator.wait_for_everyone()
    if ema is not None:
        ema.copy_to(params)  # the run's product is the EMA weights
    final = run.full_model(transformer, model)  # on every process: a gather when sharded

    def save_pipeline(folder: str) -> None:
        frozen = (vae, text_encoder)
        if weight_dtype(opt.mixed_precision) != torch.float32:  # ship the frozen parts as they came
            frozen = (
                SliceVAE.from_pretrained(os.path.join(cfg.model.pipeline, "vae")),
                text_encoder
                if trained_text is not None
                else load_text_encoder(cfg.model.pipeline, max_length=cfg.model.max_text_length),
            )
        _pipeline(*frozen, final, objective).save_pretrained(folder)

    outputs = {}
    if main:
        outputs = strategy.export(final, cfg.output_dir, save_pipeline, cfg.model.motion_module_export)
    run.finish()
    return {"history": history, "outputs": outputs, "skipped": skipped, "start_step": start_step}


def _pipeline(vae, text_encoder: TextEncoder, transformer, objective: Objective, sampler: str | None = None):
    return EasyAnimatePipeline(
        vae=vae,
        text_encoder=text_encoder.model,
        tokenizer=text_encoder.tokenizer,
        transformer=transformer,
        scheduler=objective.sampler(sampler),
    )


@torch.no_grad()
def validate(
    cfg: TrainConfig,
    strategy: Strategy,
    vae,
    text_encoder: TextEncoder,
    transformer,
    objective: Objective,
    step: int,
    run: RunScaffold,
) -> None:
    v = cfg.validation
    transformer.eval()
    pipe = _pipeline(vae, text_encoder, transformer, objective, v.sampler)
    pipe.set_progress_bar_config(disable=True)
    size = v.size or cfg.data.base_size
    frames = 1 if strategy.data == "image" else v.num_frames
    firsts = []
    for i, prompt in enumerate(v.prompts):
        video = pipe(
            prompt,
            num_frames=frames,
            height=size,
            width=size,
            num_inference_steps=v.inference_steps,
            generator=torch.Generator().manual_seed(cfg.seed + i),
            output_type="pt",
        ).frames[0]
        path = os.path.join(cfg.output_dir, "validation", f"step-{step:08d}", f"{i:02d}.mp4")
        save_video_tensor(path, video * 2 - 1, fps=v.fps)
        firsts.append(video[:, 0])
    if firsts:
        run.log_images("validation/first_frames", torch.stack(firsts), step)
