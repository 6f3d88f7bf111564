"""Slice VAE: frame rule, slice-size invariance, image mode, upstream compatibility, tiling, batch slicing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLMagvit

from easyanimate.models.slice_vae import VAE_PRESETS, SliceVAE, build_vae


@pytest.fixture(scope="module")
def vae() -> SliceVAE:
    torch.manual_seed(0)
    return build_vae("tiny").eval()


def video(f=17, h=32, w=48, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, f, h, w, generator=g) * 2 - 1


@torch.no_grad()
def test_shapes_and_frame_rule(vae):
    z = vae.encode(video(17)).latent_dist.mode()
    assert z.shape == (1, 4, 5, 4, 6)  # 8x spatial, 4x temporal (+ the first frame)
    assert vae.decode(z).sample.shape == (1, 3, 17, 32, 48)
    assert [vae.latent_frames(n) for n in (1, 5, 49, 145)] == [1, 2, 13, 37]
    with pytest.raises(ValueError, match="nearest valid counts: 5 or 9"):
        vae.encode(video(6))
    with pytest.raises(ValueError, match="nearest valid counts: 1 or 5"):
        vae.latent_frames(3)


@torch.no_grad()
def test_opt_in_trim(vae):
    vae.allow_trim = True
    try:
        z = vae.encode(video(19)).latent_dist.mode()
    finally:
        vae.allow_trim = False
    assert z.shape[2] == 5  # 19 -> 17 frames
    assert torch.equal(z, vae.encode(video(19)[:, :, :17]).latent_dist.mode())


@torch.no_grad()
def test_image_mode_is_the_first_frame_of_a_video(vae):
    x = video(9)
    z_video = vae.encode(x).latent_dist.mode()
    z_image = vae.encode(x[:, :, 0]).latent_dist.mode()  # (B, 3, H, W) image
    assert z_image.shape == (1, 4, 1, 4, 6)
    # causal: the first latent frame sees only the first video frame
    assert torch.allclose(z_image[:, :, 0], z_video[:, :, 0], atol=1e-5)
    assert vae.decode(z_image).sample.shape == (1, 3, 1, 32, 48)


@torch.no_grad()
@pytest.mark.parametrize("spatial_group_norm", [True, False])
def test_slice_size_invariance(spatial_group_norm):
    torch.manual_seed(0)
    model = build_vae("tiny", spatial_group_norm=spatial_group_norm).eval()
    x = video(25)
    latents = {}
    for s in (4, 8, 12, 24):
        model.set_slicing(encode_frames=s)
        latents[s] = model.encode(x).latent_dist.mode()
    for s in latents:
        assert (latents[s] - latents[4]).abs().max().item() <= 1e-4, s
    frames = {}
    for s in (1, 2, 3, 6):
        model.set_slicing(decode_latents=s)
        frames[s] = model.decode(latents[4]).sample
    for s in frames:
        assert (frames[s] - frames[1]).abs().max().item() <= 1e-4, s


@torch.no_grad()
def test_upstream_breaks_invariance_without_spatial_group_norm():
    """Why SliceVAE always normalises per frame: upstream's other setting depends on the slice size."""
    torch.manual_seed(0)
    up = AutoencoderKLMagvit(**{**VAE_PRESETS["tiny"], "spatial_group_norm": False}).eval()
    x = video(17)
    up.num_sample_frames_batch_size = 4
    a = up.encode(x).latent_dist.mode()
    up.num_sample_frames_batch_size = 16
    b = up.encode(x).latent_dist.mode()
    assert (a - b).abs().max().item() > 1e-3


@torch.no_grad()
def test_saved_upstream_magvit_loads_identically(tmp_path):
    torch.manual_seed(1)
    up = AutoencoderKLMagvit(**VAE_PRESETS["tiny"]).eval()
    up.save_pretrained(tmp_path)
    ours = SliceVAE.from_pretrained(tmp_path).eval()
    x = video(9)
    z_up = up.encode(x).latent_dist.mode()
    z = ours.encode(x).latent_dist.mode()
    assert torch.equal(z, z_up)
    assert torch.equal(ours.decode(z).sample, up.decode(z_up).sample)
    ours.save_pretrained(tmp_path / "ours")
    again = SliceVAE.from_pretrained(tmp_path / "ours").eval()
    assert torch.equal(again.decode(z).sample, ours.decode(z).sample)


def test_set_slicing_validates(vae):
    with pytest.raises(ValueError, match="multiple of 4"):
        vae.set_slicing(encode_frames=6)
    with pytest.raises(ValueError, match=">= 1"):
        vae.set_slicing(decode_latents=0)
    with pytest.raises(ValueError, match="unknown VAE preset"):
        build_vae("huge")


def test_tile_blending_is_exact_for_local_ops(vae):
    vae.enable_tiling(tile_sample_size=32, tile_sample_overlap=16)
    try:
        z = torch.randn(1, 4, 3, 13, 21)
        up = lambda t: F.interpolate(t, scale_factor=(1, 8, 8), mode="nearest")  # noqa: E731
        assert (vae._tiled(z, up, 8) - up(z)).abs().max().item() < 1e-5
        x = torch.randn(1, 3, 3, 72, 104)
        down = lambda t: F.avg_pool3d(t, (1, 8, 8))  # noqa: E731
        assert (vae._tiled(x, down, 1 / 8) - down(x)).abs().max().item() < 1e-5
    finally:
        vae.use_tiling = False


@torch.no_grad()
def test_tiled_vae_shapes(vae):
    x = video(5, h=64, w=96)
    full = vae.decode(vae.encode(x).latent_dist.mode()).sample
    vae.enable_tiling(tile_sample_size=32, tile_sample_overlap=16)
    try:
        z = vae.encode(x).latent_dist.mode()
        tiled = vae.decode(z).sample
    finally:
        vae.use_tiling = False
    assert z.shape == (1, 4, 2, 8, 12) and tiled.shape == full.shape
    assert torch.isfinite(tiled).all()


@torch.no_grad()
def test_batch_slicing_matches_batched(vae):
    x = video(9, b=2)
    batched = vae.encode(x).latent_dist.mode()
    vae.enable_slicing()
    try:
        sliced = vae.encode(x).latent_dist.mode()
        dec_sliced = vae.decode(sliced).sample
    finally:
        vae.disable_slicing()
    assert (sliced - batched).abs().max().item() <= 1e-5
    assert (dec_sliced - vae.decode(batched).sample).abs().max().item() <= 1e-4


def test_slice_checkpointing_gives_equal_gradients():
    """Upstream's block-level checkpointing raises with the causal cache; ours matches plain backprop."""

    def grads(checkpointing: bool):
        torch.manual_seed(0)
        model = build_vae("tiny").train()
        model.set_slicing(encode_frames=4, decode_latents=1)
        if checkpointing:
            model.enable_gradient_checkpointing()
        x = video(9, h=16, w=16, seed=1)
        out = model.decode(model.encode(x).latent_dist.mode()).sample
        (out - x).abs().mean().backward()
        return {k: p.grad for k, p in model.named_parameters() if p.grad is not None}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys() and len(plain) > 10
    for k in plain:
        assert torch.allclose(plain[k], ckpt[k], atol=1e-7, rtol=1e-5), k
