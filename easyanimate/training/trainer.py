"""The one DiT training loop for every mode (t2i, t2v, lora, motion_lora, inpaint), on accelerate.

Read top to bottom: components -> what trains (strategy) -> data (bucket sampler) -> resume -> loop
(encode, noise by the objective, predict, loss, step) -> checkpoints / validation -> outputs.
Randomness that shapes a step (noise, timesteps, VAE sampling, masks) is a pure function of
(seed, step, rank), and the sampler position is saved: a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler as get_lr_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils.torch_utils import randn_tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.bucket import BucketBatchSampler, TokenLengthRule
from ..data.datasets import VideoDataset, collate
from ..data.formats import load_records
from ..data.masks import MaskConfig
from ..diffusion.objectives import Objective
from ..models.presets import TRANSFORMER_PRESETS, build_transformer
from ..models.slice_vae import SliceVAE
from ..models.text_encoder import load_text_encoder
from ..models.transformer3d import VideoTransformer3DModel
from ..pipeline.pipeline_easyanimate import EasyAnimatePipeline
from ..utils.video import save_video_tensor
from .cache import CachedLatents, collate_cached
from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .config import save_config
from .randomness import step_generator
from .run_config import TrainConfig
from .strategies import inpaint_condition, save_lora, select_trainable, strategy_for

logger = logging.getLogger(__name__)


def load_transformer(cfg: TrainConfig, caption_channels: int) -> VideoTransformer3DModel:
    """A preset (fresh), a PixArt-alpha folder (from_pixart) or one of our transformer folders."""
    source = cfg.transformer or os.path.join(cfg.pipeline, "transformer")
    options = dict(cfg.transformer_options)
    if source in TRANSFORMER_PRESETS:
        return build_transformer(source, **{"caption_channels": caption_channels, **options})
    config_path = os.path.join(source, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"transformer {source!r} is neither a preset {sorted(TRANSFORMER_PRESETS)} nor a folder"
        )
    with open(config_path) as fh:
        class_name = json.load(fh).get("_class_name")
    if class_name in ("PixArtTransformer2DModel", "Transformer2DModel"):
        return VideoTransformer3DModel.from_pixart(source, **options)
    model = VideoTransformer3DModel.from_pretrained(source)
    if options:
        model.set_motion_layout(**options)
    return model


def build_data(cfg: TrainConfig, data_kind: str, num_replicas: int = 1, rank: int = 0):
    """The records this run trains on and their bucket sampler (shared with scripts/precompute.py)."""
    records = load_records(cfg.data.format, cfg.data.meta, cfg.data.root)
    if data_kind != "both":
        records = [r for r in records if r.type == data_kind]
    token_rule = (
        TokenLengthRule(cfg.data.base_size, cfg.data.token_base_frames, cfg.data.max_frames)
        if cfg.data.token_length
        else None
    )
    sampler = BucketBatchSampler(
        records,
        cfg.data.batch_size,
        base_size=cfg.data.base_size,
        num_frames=cfg.data.num_frames,
        token_rule=token_rule,
        seed=cfg.seed,
        num_replicas=num_replicas,
        rank=rank,
    )
    if len(sampler) == 0:
        raise ValueError(f"no full batch of {cfg.data.batch_size} per process in {len(records)} records")
    return records, sampler


def make_optimizer(params, cfg: TrainConfig):
    if cfg.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise ImportError(
                "use_8bit_adam needs bitsandbytes (GPU machines): pip install bitsandbytes"
            ) from err
        return bnb.optim.AdamW8bit(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def train(cfg: TrainConfig) -> dict[str, Any]:
    AcceleratorState._reset_state()  # one run per call (tests, notebooks); the distributed state stays
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with="tensorboard",
        project_dir=cfg.output_dir,
    )
    main, device, rank = accelerator.is_main_process, accelerator.device, accelerator.process_index
    logger.info(
        "process %d of %d (%s) on %s", rank, accelerator.num_processes, accelerator.distributed_type, device
    )
    os.makedirs(cfg.output_dir, exist_ok=True)
    if main:
        save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))
    accelerator.init_trackers("tensorboard")
    set_seed(cfg.seed)

    # components: frozen VAE and text encoder, the transformer to train
    vae = SliceVAE.from_pretrained(os.path.join(cfg.pipeline, "vae")).to(device).eval().requires_grad_(False)
    text_encoder = load_text_encoder(cfg.pipeline, max_length=cfg.max_text_length, device=device)
    transformer = load_transformer(cfg, text_encoder.hidden_size)
    if cfg.mode == "inpaint":
        transformer.widen_inputs(2 * vae.config.latent_channels + 1)
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    strategy = strategy_for(cfg.mode, cfg.t2v_stage, cfg.lora.include_motion_modules)
    if cfg.trainable_prefixes is not None or cfg.frozen_prefixes is not None:
        strategy.trainable = tuple(cfg.trainable_prefixes or ())
        strategy.frozen = tuple(cfg.frozen_prefixes or ())
    params = select_trainable(transformer, strategy, cfg.lora.rank, cfg.lora.alpha)
    if cfg.train_text_encoder:  # trained with the DiT (eval mode: no dropout); saved in the exported pipeline
        text_encoder.model.requires_grad_(True)
        params += list(text_encoder.model.parameters())
    logger.info("training %d tensors (%.2fM parameters)", len(params), sum(p.numel() for p in params) / 1e6)
    objective = Objective(cfg.objective, cfg.zero_terminal_snr, cfg.snr_gamma, cfg.flow_shift)
    optimizer = make_optimizer(params, cfg)
    lr_scheduler = get_lr_scheduler(
        cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=cfg.max_steps
    )
    transformer, optimizer, lr_scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)
    model = accelerator.unwrap_model(transformer)
    # prepared: its weights go into checkpoints and its gradients are synchronised; validation and export use
    # text_encoder (the same weights, unwrapped)
    trained_text_encoder = accelerator.prepare(text_encoder.model) if cfg.train_text_encoder else None
    ema = None
    if cfg.ema_decay is not None:
        ema = EMAModel(params, decay=cfg.ema_decay)
        ema.to(device)
        accelerator.register_for_checkpointing(ema)

    # data: one shape per batch, disjoint shares per process, position saved with checkpoints
    records, sampler = build_data(cfg, strategy.data, accelerator.num_processes, rank)
    if cfg.latent_cache:
        if cfg.mode == "inpaint":
            raise ValueError("inpaint training masks pixels: it cannot read a latent cache")
        captions = [r.text for r in records] if cfg.train_text_encoder else None
        dataset = CachedLatents(cfg.latent_cache, cfg, strategy.data, captions)
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
    masks = MaskConfig(video=cfg.masks) if cfg.masks else MaskConfig()

    # resume
    step, epoch, position, skipped = 0, 0, 0, 0
    resume = resolve_resume(cfg.output_dir, cfg.resume_from_checkpoint)
    if resume:
        state = load_checkpoint(accelerator, resume)
        step, epoch, position, skipped = (
            state["step"],
            state["epoch"],
            state["position"][rank],
            state["skipped"],
        )
        logger.info("resumed from %s at step %d", resume, step)
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

    text_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def encode_text(captions: list[str]):
        if trained_text_encoder is not None:
            ids, mask = text_encoder.tokenize(captions)
            return trained_text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask
        if not cfg.cache_text_features:
            return text_encoder(captions)
        missing = [c for c in dict.fromkeys(captions) if c not in text_cache]
        if missing:
            feats, mask = text_encoder(missing)
            text_cache.update({c: (feats[i], mask[i]) for i, c in enumerate(missing)})
        return torch.stack([text_cache[c][0] for c in captions]), torch.stack(
            [text_cache[c][1] for c in captions]
        )

    history: list[dict[str, float]] = []
    data = batches()
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not main, desc=f"train {cfg.mode}")
    transformer.train()
    while step < cfg.max_steps:
        for _ in range(cfg.gradient_accumulation_steps):
            batch = next(data)
            skipped += len(batch["skipped"])
            if cfg.log_sample_indices:
                with open(os.path.join(cfg.output_dir, f"samples_rank{rank}.jsonl"), "a") as fh:
                    fh.write(json.dumps({"step": step, "indices": batch["index"]}) + "\n")
            micro = step * cfg.gradient_accumulation_steps + position  # unique per micro-batch
            gen = step_generator(cfg.seed, micro, rank, device)
            if cfg.latent_cache:  # sample the cached posterior exactly as DiagonalGaussianDistribution does
                mean, std = batch["mean"].to(device), batch["std"].to(device)
                latents = (
                    mean + std * randn_tensor(mean.shape, generator=gen, device=device)
                ) * vae.config.scaling_factor
                if cfg.train_text_encoder:
                    text, text_mask = encode_text(batch["captions"])
                else:
                    text, text_mask = batch["text"].to(device), batch["text_mask"].to(device)
            else:
                pixels = batch["pixels"].to(device)
                with torch.no_grad():
                    latents = vae.encode(pixels).latent_dist.sample(generator=gen) * vae.config.scaling_factor
                text, text_mask = encode_text(batch["text"])  # the frozen encoder runs without grad
            noise = torch.randn(latents.shape, generator=gen, device=device)
            noised = objective.noise(latents, noise, gen)
            model_input = noised.model_input
            if cfg.mode == "inpaint":
                rng = np.random.default_rng([cfg.seed, micro, rank])
                model_input = torch.cat([model_input, inpaint_condition(vae, pixels, rng, masks)], dim=1)
            with accelerator.accumulate(transformer), accelerator.autocast():
                pred = transformer(
                    model_input, noised.timesteps, text, encoder_attention_mask=text_mask
                ).sample
                loss = objective.loss(pred[:, : latents.shape[1]], noised)  # learned-sigma half not trained
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite loss at step {step} ({loss.item()}); no update was applied, "
                        f"the last checkpoint in {cfg.output_dir} is intact"
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(params)
        step += 1
        logs = {"loss": loss.item(), "lr": lr_scheduler.get_last_lr()[0], "data/skipped": skipped}
        history.append(logs)
        bar.update(1)
        bar.set_postfix(loss=f"{logs['loss']:.4f}", shape=tuple(latents.shape[2:]))
        if step % cfg.log_steps == 0 or step == cfg.max_steps:
            accelerator.log({f"train/{k}" if "/" not in k else k: v for k, v in logs.items()}, step=step)
        if step % cfg.checkpointing_steps == 0 or step == cfg.max_steps:
            positions = accelerator.gather(torch.tensor([position], device=device)).tolist()
            state = {"epoch": epoch, "position": positions, "skipped": skipped}
            save_checkpoint(accelerator, cfg.output_dir, step, state, cfg.checkpoints_total_limit)
        if main and (step % cfg.validation_steps == 0 or step == cfg.max_steps):
            validate(cfg, vae, text_encoder, model, objective, step, accelerator)
            transformer.train()
    bar.close()

    accelerator.wait_for_everyone()
    outputs = {}
    if main:
        if ema is not None:
            ema.copy_to(params)
        outputs = export(cfg, vae, text_encoder, model, objective)
    accelerator.end_training()
    return {
        "history": history,
        "outputs": outputs,
        "skipped": skipped,
        "start_step": start_step,
    }


def _pipeline(vae, text_encoder, transformer, objective: Objective, sampler: str | None = None):
    return EasyAnimatePipeline(
        vae=vae,
        text_encoder=text_encoder.model,
        tokenizer=text_encoder.tokenizer,
        transformer=transformer,
        scheduler=objective.sampler(sampler),
    )


@torch.no_grad()
def validate(
    cfg: TrainConfig, vae, text_encoder, transformer, objective: Objective, step: int, accelerator
) -> None:
    transformer.eval()
    pipe = _pipeline(vae, text_encoder, transformer, objective, cfg.validation_sampler)
    pipe.set_progress_bar_config(disable=True)
    size = cfg.validation_size or cfg.data.base_size
    frames = 1 if strategy_for(cfg.mode, cfg.t2v_stage).data == "image" else cfg.validation_num_frames
    firsts = []
    for i, prompt in enumerate(cfg.validation_prompts):
        video = pipe(
            prompt,
            num_frames=frames,
            height=size,
            width=size,
            num_inference_steps=cfg.validation_inference_steps,
            generator=torch.Generator().manual_seed(cfg.seed + i),
            output_type="pt",
        ).frames[0]
        path = os.path.join(cfg.output_dir, "validation", f"step-{step:08d}", f"{i:02d}.mp4")
        save_video_tensor(path, video * 2 - 1, fps=cfg.fps)
        firsts.append(video[:, 0])
    tracker = accelerator.get_tracker("tensorboard", unwrap=True)
    if hasattr(tracker, "add_images"):
        tracker.add_images("validation/first_frames", torch.stack(firsts).cpu(), step)


def export(cfg: TrainConfig, vae, text_encoder, transformer, objective: Objective) -> dict[str, str]:
    """LoRA modes: a small LoRA safetensors; other modes: a full pipeline folder (+ motion modules alone)."""
    out: dict[str, str] = {}
    if cfg.mode in ("lora", "motion_lora"):
        out["lora"] = save_lora(transformer, cfg.output_dir)
        return out
    folder = os.path.join(cfg.output_dir, "pipeline")
    _pipeline(vae, text_encoder, transformer, objective).save_pretrained(folder)
    out["pipeline"] = folder
    if len(transformer.motion_modules):
        out["motion_module"] = transformer.save_motion_modules(os.path.join(cfg.output_dir, "motion_module"))
        if cfg.motion_module_export:
            transformer.save_motion_modules(cfg.motion_module_export)
    return out
