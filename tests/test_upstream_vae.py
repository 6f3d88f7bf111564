"""Upstream EasyAnimate's V2 / V3 VAE (its own MagViT) through `load_vae`: parity with upstream's outputs
(../shared/upstream-parity/, skipped with the reason when absent), the released layout, frame rules, strict
loading and the slicing invariants that hold without the shared folder."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file, save_file

from easyanimate.models import SliceVAE
from easyanimate.models.loading import load_vae, vae_class
from easyanimate.models.upstream_vae import UpstreamMagvitVAE

PARITY = os.path.join(os.path.dirname(ROOT), "shared", "upstream-parity")
needs_parity = pytest.mark.skipif(
    not os.path.isdir(PARITY), reason=f"{PARITY} (upstream EasyAnimate's reference outputs) is not here"
)
BLOCKS_DOWN = "('SpatialDownBlock3D', 'SpatialTemporalDownBlock3D', 'SpatialTemporalDownBlock3D', 'SpatialTemporalDownBlock3D')"  # fmt: skip
BLOCKS_UP = "('SpatialUpBlock3D', 'SpatialTemporalUpBlock3D', 'SpatialTemporalUpBlock3D', 'SpatialTemporalUpBlock3D')"  # fmt: skip
# upstream's V3 VAE config as upstream writes it (string-typed block lists), at the test size
TINY_V3 = {
    "_class_name": "AutoencoderKLMagvit", "_diffusers_version": "0.28.2", "act_fn": "silu", "ch": 16,
    "ch_mult": [1, 2, 2, 2], "down_block_types": BLOCKS_DOWN, "up_block_types": BLOCKS_UP, "in_channels": 3,
    "latent_channels": 4, "layers_per_block": 2, "mid_block_attention_type": "3d",
    "mid_block_num_attention_heads": 1, "mid_block_type": "MidBlock3D", "mid_block_use_attention": True,
    "mini_batch_decoder": 2, "mini_batch_encoder": 8, "norm_num_groups": 8, "num_attention_heads": 1,
    "out_channels": 3, "scaling_factor": 0.1825, "slice_compression_vae": True, "use_gc_blocks": None,
    "use_tiling": False,
}  # fmt: skip
TINY_V2 = dict(TINY_V3, slice_compression_vae=False, mini_batch_encoder=9, mini_batch_decoder=3)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def upstream_vae_folder(path, config: dict, seed: int = 0) -> str:
    """An upstream-format VAE folder: upstream's config.json and weights under upstream's key names."""
    os.makedirs(path, exist_ok=True)
    torch.manual_seed(seed)
    model = UpstreamMagvitVAE.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(path, "diffusion_pytorch_model.safetensors"))  # fmt: skip
    with open(os.path.join(path, "config.json"), "w") as fh:
        json.dump(config, fh)
    return str(path)


@needs_parity
def test_v3_vae_computes_what_upstream_computes():
    """Both slice cases (16 frames: slices only; 17: a lone first frame) and V2's chunked mode (18 frames),
    through the module calls (`encode` / `decode`) and the pipeline's (`encode_latents` / `decode_latents`)."""
    io = load_file(os.path.join(PARITY, "vae_io.safetensors"))
    vae = load_vae(os.path.join(PARITY, "vae_v3"))
    assert isinstance(vae, UpstreamMagvitVAE)
    sf = vae.config.scaling_factor
    with torch.no_grad():
        for n in (16, 17):
            moments = io[f"moments_{n}"]
            assert rel(vae.encode(io[f"video_{n}"]).latent_dist.parameters, moments) <= 1e-4
            assert rel(vae.encode_latents(io[f"video_{n}"]) / sf, moments[:, :4]) <= 1e-4
            assert rel(vae.decode(moments[:, :4]).sample, io[f"decoded_{n}"]) <= 1e-4
            assert rel(vae.decode_latents(moments[:, :4] * sf), io[f"decoded_{n}"]) <= 1e-4
        v2 = UpstreamMagvitVAE.from_config(TINY_V2 | {"_class_name": "AutoencoderKLMagvit"})
        v2.load_state_dict(vae.state_dict())
        moments = io["v2mode_moments_18"]
        assert rel(v2.encode_latents(io["v2mode_video_18"]) / sf, moments[:, :4]) <= 1e-4
        assert rel(v2.decode_latents(moments[:, :4] * sf), io["v2mode_decoded_18"]) <= 1e-4


def test_released_v3_vae_layout():
    """The real-size V3 VAE (ch 128, ch_mult 1,2,4,4): every key and shape of the released file (from the
    manifest when ../shared is here), else its tensor and element counts as the manifest's summary gives them."""
    config = dict(TINY_V3, ch=128, ch_mult=[1, 2, 4, 4], norm_num_groups=32)
    with torch.device("meta"):
        model = UpstreamMagvitVAE.from_config(config)
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    manifest = os.path.join(PARITY, "manifest.json")
    if os.path.isfile(manifest):
        with open(manifest) as fh:
            assert own == json.load(fh)["layouts"]["v3_vae"]
    assert (len(own), sum(v.numel() for v in model.state_dict().values())) == (248, 245_979_879)


def test_frame_rules_and_latent_counts():
    v3 = UpstreamMagvitVAE.from_config(TINY_V3)
    v2 = UpstreamMagvitVAE.from_config(TINY_V2)
    assert [f for f in range(1, 26) if v3.shape_rule.frames_ok(f)] == [1, 8, 9, 16, 17, 24, 25]
    assert [v3.latent_frames(f) for f in (1, 8, 9, 16, 17)] == [1, 2, 3, 4, 5]
    assert [f for f in range(1, 30) if v2.shape_rule.frames_ok(f)] == [1, 9, 18, 27]
    assert [v2.latent_frames(f) for f in (1, 9, 18)] == [1, 3, 6]
    assert v3.shape_rule.frames_text.startswith("8k or 1 + 8k (1, 8, 9, 16")
    with pytest.raises(ValueError, match=r"num_frames must be 1 or 9k, got 10 \(nearest: 9 or 18\)"):
        v2.latent_frames(10)
    with pytest.raises(ValueError, match="frames must be 8k or 1 \\+ 8k, got 12"):
        v3.encode_latents(torch.zeros(1, 3, 12, 32, 32))
    assert v3.spatial_compression_ratio == 8 and v3.shape_rule.with_patch(2).size_multiple == 16


def test_v3_slices_are_independent_and_decoder_slices_see_their_neighbours(tmp_path):
    """V3's encoder cuts a video into independent 8-frame slices; its decoder's slices also read the next and
    previous slices' latents (conv_in + mid block), so decoding 2 + 2 latents apart differs from decoding 4."""
    vae = load_vae(upstream_vae_folder(tmp_path / "vae", TINY_V3))
    video = torch.rand(1, 3, 16, 32, 32) * 2 - 1
    with torch.no_grad():
        whole = vae.encode_latents(video)
        halves = torch.cat([vae.encode_latents(video[:, :, :8]), vae.encode_latents(video[:, :, 8:])], 2)
        assert torch.allclose(whole, halves, atol=1e-6)
        apart = torch.cat([vae.decode_latents(whole[:, :, :2]), vae.decode_latents(whole[:, :, 2:])], 2)
        together = vae.decode_latents(whole)
    assert together.shape == (1, 3, 16, 32, 32)
    assert rel(apart, together) > 1e-3


def test_seam_smoothing_averages_a_second_pass_over_the_middle(tmp_path):
    vae = load_vae(upstream_vae_folder(tmp_path / "vae", TINY_V3))
    latents = torch.randn(1, 4, 6, 4, 4)
    with torch.no_grad():
        plain = vae.decode_latents(latents)
        vae.smooth_seams = True
        smooth = vae.decode_latents(latents)
        vae.smooth_seams = False
        lo, hi = 4, 24 - 4  # half a mini-batch (8 frames) in from each end
        second = vae.decode_latents(vae.encode_latents(plain.clamp(-1, 1)[:, :, lo:hi]))
    assert torch.allclose(smooth[:, :, :lo], plain[:, :, :lo].clamp(-1, 1))
    assert torch.allclose(smooth[:, :, hi:], plain[:, :, hi:].clamp(-1, 1))
    expected = ((plain.clamp(-1, 1)[:, :, lo:hi] + second) / 2).clamp(-1, 1)
    assert torch.allclose(smooth[:, :, lo:hi], expected, atol=1e-5)


def test_loading_is_strict_and_picks_the_class_from_the_config(tmp_path):
    folder = upstream_vae_folder(tmp_path / "vae", TINY_V3)
    assert vae_class(TINY_V3) is UpstreamMagvitVAE
    assert vae_class({"_class_name": "AutoencoderKLMagvit", "block_out_channels": [8]}) is SliceVAE
    with pytest.raises(ValueError, match="load it with easyanimate.models.load_vae"):
        SliceVAE.from_pretrained(folder)
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    weights = str(damaged / "diffusion_pytorch_model.safetensors")
    state = load_file(weights)
    state.pop("decoder.mid_block.attentions.0.to_q.weight")
    save_file(state, weights)
    with pytest.raises(ValueError, match=r"missing \['decoder.mid_block.attentions.0.to_q.weight'\]"):
        load_vae(str(damaged))
    with pytest.raises(ValueError, match="block type 'TemporalDownBlock3D' is not supported"):
        UpstreamMagvitVAE.from_config(dict(TINY_V3, down_block_types=["TemporalDownBlock3D"] * 4))
