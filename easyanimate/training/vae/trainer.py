"""Two-stage Slice VAE training on accelerate, readable top to bottom.

Stage 1 trains encoder and decoder on mixed image and video batches: L1 reconstruction + KL, plus an
optional perceptual loss (local VGG16 weights) and an optional 3D-patch adversarial loss from
`disc_start` on. Stage 2 fine-tunes the decoder alone; the encoder is frozen and checked bit-identical at
the end. Checkpoints are atomic and resumable; validation reconstructions are saved as mp4 and logged
(PSNR, SSIM) to tensorboard.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ...data.folder import MediaFolder, StepBatches
from ...data.video_io import save_video_tensor
from ...eval.metrics import psnr, ssim
from ...models.loading import load_vae
from ...models.slice_vae import SliceVAE
from ..randomness import step_generator
from ..scaffold import RunScaffold
from .config import VAETrainConfig
from .discriminator import PatchDiscriminator3D
from .losses import VGGFeatureLoss, generator_adv_loss, hinge_d_loss, kl_loss

logger = logging.getLogger(__name__)


def encoder_digest(vae: SliceVAE) -> str:
    """A hash of every encoder-side tensor: stage 2 must leave it unchanged."""
    h = hashlib.sha256()
    for name, t in sorted({**vae.encoder.state_dict(), **vae.quant_conv.state_dict()}.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Autoencode(nn.Module):
    """encode -> sample -> decode as one forward, so DDP sees (and synchronises) the whole graph."""

    def __init__(self, vae: SliceVAE, train_encoder: bool):
        super().__init__()
        self.vae, self.train_encoder = vae, train_encoder

    def forward(self, x: torch.Tensor, generator: torch.Generator):
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            posterior = self.vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(
            posterior.mean.shape, generator=generator, device=x.device, dtype=posterior.mean.dtype
        )
        return self.vae.decode(z).sample, posterior.mean, posterior.logvar


@torch.no_grad()
def validate(vae: SliceVAE, clip: torch.Tensor, path: str, fps: int) -> dict[str, float]:
    was_training = vae.training
    vae.eval()
    rec = vae.decode(vae.encode(clip).latent_dist.mode()).sample.clamp(-1, 1)
    vae.train(was_training)
    a, b = (clip[0] + 1) / 2, (rec[0].float() + 1) / 2  # (3, F, H, W) in [0, 1]
    save_video_tensor(
        path, torch.cat([clip[0], rec[0].float()], dim=-1), fps=fps
    )  # original | reconstruction
    frames = lambda v: v.transpose(0, 1)  # noqa: E731
    return {"val/psnr": psnr(a, b), "val/ssim": ssim(frames(a), frames(b))}


def train_vae(cfg: VAETrainConfig) -> dict[str, Any]:
    run = RunScaffold(
        cfg,
        cfg.output_dir,
        seed=cfg.seed,
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_steps=cfg.max_steps,
        checkpoint_every=cfg.checkpointing_steps,
        keep=cfg.checkpoints_total_limit,
        resume_from=cfg.resume_from_checkpoint,
        report_to=cfg.report_to,
        overwrite=cfg.overwrite,
    )
    accelerator, main = run.accelerator, run.main

    # model and what trains
    vae = load_vae(cfg.model, cfg.model_options)
    vae.shape_rule.check_frames(cfg.data.num_frames, "data.num_frames")
    if not vae.shape_rule.size_ok(cfg.data.size):
        raise ValueError(
            f"data.size must be a multiple of {vae.shape_rule.size_multiple}, got {cfg.data.size}"
        )
    vae.set_slicing(encode_frames=cfg.encode_slice_frames, decode_latents=cfg.decode_slice_latents)
    if cfg.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    vae.train()
    if cfg.stage == 2:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    model = Autoencode(vae, train_encoder=cfg.stage == 1)

    losses = cfg.loss
    perceptual = VGGFeatureLoss(losses.perceptual_weights) if losses.perceptual_weights else None
    disc = disc_opt = None
    if losses.disc_start is not None:
        disc = PatchDiscriminator3D(channels=losses.disc_channels)
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=losses.disc_learning_rate, betas=(0.5, 0.9))
        model, optimizer, disc, disc_opt = accelerator.prepare(model, optimizer, disc, disc_opt)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    if perceptual is not None:
        perceptual.to(accelerator.device)
    vae = accelerator.unwrap_model(model).vae

    # data: batches are a pure function of (seed, step, rank)
    data = cfg.data
    folder = MediaFolder(
        data.root,
        data.num_frames,
        data.size,
        batch_size=data.batch_size,
        image_ratio=data.image_ratio,
        seed=cfg.seed,
        rank=accelerator.process_index,
        frame_stride=data.frame_stride,
    )
    val_clip = folder.validation_clip().to(accelerator.device) if main else None

    # resume
    start = run.resume().get("step", 0)
    digest = encoder_digest(vae) if cfg.stage == 2 else None

    loader = DataLoader(
        StepBatches(folder, start, cfg.max_steps), batch_size=None, num_workers=data.num_workers
    )
    history: list[dict[str, float]] = []
    bar = tqdm(total=cfg.max_steps, initial=start, disable=not main, desc=f"VAE stage {cfg.stage}")
    for step, batch in zip(range(start, cfg.max_steps), loader):
        x = batch["pixels"].to(accelerator.device)
        gen = step_generator(cfg.seed, step, accelerator.process_index, accelerator.device)
        use_gan = disc is not None and step >= losses.disc_start
        logs: dict[str, float] = {}
        with accelerator.accumulate(model):
            with accelerator.autocast():
                rec, mean, logvar = model(x, gen)
                rec = rec.float()
                loss = (rec - x).abs().mean()
                logs["rec_l1"] = loss.item()
                if losses.l2_weight:
                    l2 = (rec - x).square().mean()
                    loss = loss + losses.l2_weight * l2
                    logs["rec_l2"] = l2.item()
                if cfg.stage == 1:
                    kl = kl_loss(mean.float(), logvar.float())
                    loss = loss + losses.kl_weight * kl
                    logs["kl"] = kl.item()
                if perceptual is not None:
                    p_loss = perceptual(rec, x)
                    loss = loss + losses.perceptual_weight * p_loss
                    logs["perceptual"] = p_loss.item()
                if use_gan:
                    g_adv = generator_adv_loss(disc(rec))
                    loss = loss + losses.disc_weight * g_adv
                    logs["g_adv"] = g_adv.item()
            run.check_finite(loss, step, logs, what="VAE loss")
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if use_gan:
            with accelerator.accumulate(disc):
                disc_opt.zero_grad(set_to_none=True)  # drop what the generator pass left in D
                d_loss = hinge_d_loss(disc(x), disc(rec.detach()))
                accelerator.backward(d_loss)
                disc_opt.step()
                disc_opt.zero_grad(set_to_none=True)
            logs["d_loss"] = d_loss.item()
        logs["loss"] = loss.item()
        history.append(logs)
        done = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{logs['loss']:.4f}", kind=batch["kind"])
        if run.due(done, cfg.log_steps):
            accelerator.log(
                {f"train/{k}": v for k, v in logs.items()} | {"data/skipped": folder.num_skipped}, step=done
            )
        run.checkpoint(done, lambda: {"skipped": folder.num_skipped})
        if main and run.due(done, cfg.validation_steps):
            path = os.path.join(cfg.output_dir, "validation", f"step-{done:08d}.mp4")
            metrics = validate(vae, val_clip, path, cfg.fps)
            accelerator.log(metrics, step=done)
            logs.update(metrics)
    bar.close()

    accelerator.wait_for_everyone()
    final_dir = os.path.join(cfg.output_dir, "vae")
    if cfg.stage == 2 and encoder_digest(vae) != digest:
        raise RuntimeError("stage 2 changed the encoder; it must stay frozen")
    if main:
        vae.save_pretrained(final_dir)
    run.finish()
    return {"history": history, "skipped": dict(folder.skipped), "final_dir": final_dir, "start_step": start}
