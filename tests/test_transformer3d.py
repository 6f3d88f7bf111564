"""VideoTransformer3DModel: shapes, PixArt equivalence, identity at init, learning, files."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import make_pixart
from diffusers import DiTTransformer2DModel

from easyanimate.models import VideoTransformer3DModel, build_transformer
from easyanimate.models.motion_module import MotionModule


def inputs(b=2, f=5, h=8, w=12, c=4, text_dim=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, f, h, w, generator=g)
    t = torch.tensor([17, 803][:b])
    text = torch.randn(b, 7, text_dim, generator=g)
    mask = torch.ones(b, 7)
    mask[-1, 4:] = 0  # padding in the last prompt
    return x, t, text, mask


def pixart_per_frame(pixart, x, t, text, mask, added=None):
    frames = [
        pixart(
            x[:, :, i],
            encoder_hidden_states=text,
            timestep=t,
            encoder_attention_mask=mask,
            added_cond_kwargs=added,
        ).sample
        for i in range(x.shape[2])
    ]
    return torch.stack(frames, dim=2)


def tiny(**kw) -> VideoTransformer3DModel:
    torch.manual_seed(0)
    return build_transformer("tiny", **kw).eval()


@pytest.mark.parametrize("frames", [1, 5])
def test_shapes(frames):
    model = tiny(caption_channels=24, out_channels=8)
    x, t, text, mask = inputs(f=frames)
    with torch.no_grad():
        out = model(x, t, text, encoder_attention_mask=mask).sample
    assert out.shape == (2, 8, frames, 8, 12)
    with torch.no_grad():  # a 4D image input gives a 4D output (PixArt-compatible call)
        img = model(x[:, :, 0], t, text, encoder_attention_mask=mask).sample
    assert img.shape == (2, 8, 8, 12)


def test_scalar_timestep_and_bad_size():
    model = tiny(caption_channels=24)
    x, _, text, mask = inputs()
    with torch.no_grad():
        out = model(x, torch.tensor(5), text).sample
    assert out.shape[2] == 5
    with pytest.raises(ValueError, match="multiples of patch_size"):
        model(x[..., :7], torch.tensor(5), text)


@pytest.mark.parametrize("mode", ["none", "vanilla", "grid", "hybrid"])
@pytest.mark.parametrize("skips", [False, True])
def test_from_pixart_matches_pixart_per_frame(pixart_dir, mode, skips):
    pixart = make_pixart()  # same seed as the saved one
    model, info = VideoTransformer3DModel.from_pixart(
        pixart_dir, motion_module_mode=mode, use_long_skips=skips, output_loading_info=True
    )
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert bool(info["new_keys"]) == (mode != "none" or skips)
    x, t, text, mask = inputs(h=8, w=12)  # non-square grid: position embedding computed for it
    with torch.no_grad():
        ours = model(x, t, text, encoder_attention_mask=mask).sample
        ref = pixart_per_frame(pixart, x, t, text, mask)
    assert (ours - ref).abs().max().item() <= 1e-5


def test_from_pixart_with_resolution_conditions():
    # resolution and aspect embeddings take width/3 each: width 48
    pixart = make_pixart(use_additional_conditions=True, attention_head_dim=24, cross_attention_dim=48)
    model = VideoTransformer3DModel.from_pixart(pixart, motion_module_mode="hybrid", use_long_skips=True)
    assert model.use_additional_conditions
    x, t, text, mask = inputs()
    added = {"resolution": torch.tensor([[64.0, 96.0]] * 2), "aspect_ratio": torch.tensor([[1.5]] * 2)}
    with torch.no_grad():
        ours = model(x, t, text, encoder_attention_mask=mask, added_cond_kwargs=added).sample
        ref = pixart_per_frame(pixart, x, t, text, mask, added)
    assert (ours - ref).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="added_cond_kwargs"):
        model(x, t, text)


def test_widened_inpaint_model_starts_as_t2v(pixart_dir):
    t2v = VideoTransformer3DModel.from_pixart(pixart_dir)
    inp = VideoTransformer3DModel.from_pixart(pixart_dir, in_channels=2 * 4 + 1)
    assert inp.config.in_channels == 9 and inp.config.out_channels == 8
    x, t, text, mask = inputs()
    extra = torch.randn(2, 5, *x.shape[2:])  # mask + masked-video latents: ignored at init
    with torch.no_grad():
        a = t2v(x, t, text, encoder_attention_mask=mask).sample
        b = inp(torch.cat([x, extra], dim=1), t, text, encoder_attention_mask=mask).sample
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="smaller"):
        VideoTransformer3DModel.from_pixart(pixart_dir, in_channels=2)


def test_non_pixart_checkpoint_is_refused(tmp_path):
    dit = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        num_layers=1,
        sample_size=8,
        num_embeds_ada_norm=10,
    )
    dit.save_pretrained(tmp_path / "dit")
    with pytest.raises(ValueError, match="not a PixArt-alpha transformer"):
        VideoTransformer3DModel.from_pixart(str(tmp_path / "dit"))
    # a PixArt config whose weights are something else
    pixart_dir = tmp_path / "fake"
    make_pixart().save_pretrained(pixart_dir)
    from safetensors.torch import save_file

    save_file({"foo.weight": torch.zeros(2)}, str(pixart_dir / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ValueError, match="not PixArt-shaped"):
        VideoTransformer3DModel.from_pixart(str(pixart_dir))
    with pytest.raises(FileNotFoundError):
        VideoTransformer3DModel.from_pixart(str(tmp_path / "nowhere"))


def test_fresh_motion_module_is_identity():
    mm = MotionModule(32, 2, 16)
    x = torch.randn(6, 5, 32)
    assert torch.equal(mm(x, torch.arange(5)), x)


def test_motion_modules_and_skips_change_nothing_at_init():
    torch.manual_seed(0)
    plain = build_transformer("tiny", caption_channels=24, motion_module_mode="none").eval()
    video = build_transformer(
        "tiny", caption_channels=24, motion_module_mode="hybrid", use_long_skips=True
    ).eval()
    missing, unexpected = video.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("motion_modules.", "skip_linears.")) for k in missing)
    x, t, text, mask = inputs()
    with torch.no_grad():
        assert torch.equal(plain(x, t, text, mask).sample, video(x, t, text, mask).sample)


def test_layouts():
    m = tiny(motion_module_every=2)
    assert sorted(m.motion_modules.keys()) == ["0", "2"]
    m = tiny(motion_module_mode="hybrid")
    assert [m.motion_kinds[i] for i in range(4)] == ["temporal", "full", "temporal", "full"]
    assert tiny(use_long_skips=True).skip_sources == {3: 0, 2: 1}
    with pytest.raises(ValueError, match="motion_module_mode"):
        tiny(motion_module_mode="sideways")
    grid = tiny(motion_module_mode="grid", motion_grid_size=4, caption_channels=24)
    x, t, text, _ = inputs(h=8, w=12)  # token grid 4x6: 6 is not a multiple of 4
    with pytest.raises(ValueError, match="motion_grid_size"):
        grid(x, t, text)


def _train_motion(model, steps=40, lr=1e-2):
    """Same latent in every frame; target differs per frame: only temporal layers can tell frames apart."""
    model.train()
    model.requires_grad_(False)
    model.motion_modules.requires_grad_(True)
    opt = torch.optim.AdamW(model.motion_modules.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    frame = torch.randn(1, 4, 1, 8, 8, generator=g)
    x = frame.repeat(1, 1, 5, 1, 1)
    target = torch.linspace(-1, 1, 5).view(1, 1, 5, 1, 1).expand(1, 4, 5, 8, 8)
    text = torch.randn(1, 7, model.config.caption_channels, generator=g)
    t = torch.tensor([500])
    losses = []
    for _ in range(steps):
        out = model(x, t, text).sample
        loss = torch.nn.functional.mse_loss(out, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        out = model(x, t, text).sample
    return losses, out


@pytest.mark.parametrize("mode", ["vanilla", "grid", "hybrid"])
def test_motion_modules_learn_temporal_objective(mode):
    model = tiny(motion_module_mode=mode)
    spatial_before = {k: v.clone() for k, v in model.backbone_parameters()}
    with torch.no_grad():
        x = torch.randn(1, 4, 1, 8, 8).repeat(1, 1, 5, 1, 1)
        before = model(x, torch.tensor([500]), torch.randn(1, 7, 32)).sample
    assert before.std(dim=2).max().item() < 1e-6  # identical frames in, identical frames out
    losses, out = _train_motion(model)
    assert losses[-1] < 0.3 * losses[0]
    assert out.std(dim=2).mean().item() > 0.3  # frames now differ (target: 0.79)
    for k, v in model.backbone_parameters():
        assert torch.equal(v, spatial_before[k]), k


def test_save_pretrained_round_trip(tmp_path):
    model = tiny(motion_module_mode="hybrid", use_long_skips=True, caption_channels=24)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "VideoTransformer3DModel" and config["use_long_skips"] is True
    loaded = VideoTransformer3DModel.from_pretrained(tmp_path).eval()
    x, t, text, mask = inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, text, mask).sample, loaded(x, t, text, mask).sample)


def test_motion_module_transplant(tmp_path, pixart_dir):
    donor = tiny(motion_module_mode="vanilla", caption_channels=24)
    _train_motion(donor, steps=3)
    donor.save_motion_modules(str(tmp_path / "mm"))
    assert sorted(os.listdir(tmp_path / "mm")) == ["config.json", "diffusion_pytorch_model.safetensors"]

    # another backbone of the same width, without motion modules: the layout is rebuilt, then loaded
    host = VideoTransformer3DModel.from_pixart(pixart_dir, motion_module_mode="none")
    x, t, text, mask = inputs()
    with torch.no_grad():
        before = host(x, t, text, mask).sample
    host.load_motion_modules(str(tmp_path / "mm"))
    assert host.config.motion_module_mode == "vanilla"
    for k, v in donor.motion_modules.state_dict().items():
        assert torch.equal(host.motion_modules.state_dict()[k], v)
    with torch.no_grad():
        after = host(x, t, text, mask).sample
    assert (after - before).abs().max().item() > 1e-4

    wide = build_transformer("tiny", num_attention_heads=4)
    with pytest.raises(ValueError, match="width"):
        wide.load_motion_modules(str(tmp_path / "mm"))
    with pytest.raises(ValueError, match="no motion modules"):
        tiny(motion_module_mode="none").save_motion_modules(str(tmp_path / "none"))


def test_gradient_checkpointing_gives_equal_gradients():
    def grads(checkpointing):
        model = tiny(motion_module_mode="hybrid", use_long_skips=True, caption_channels=24).train()
        with torch.no_grad():  # non-zero skips / motion outputs so every path carries gradient
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02, alpha=1.0)
        if checkpointing:
            model.enable_gradient_checkpointing()
        x, t, text, mask = inputs()
        model(x, t, text, mask).sample.square().mean().backward()
        return {k: p.grad for k, p in model.named_parameters()}

    torch.manual_seed(3)
    plain = grads(False)
    torch.manual_seed(3)
    ckpt = grads(True)
    assert plain.keys() == ckpt.keys()
    for k in plain:
        assert torch.allclose(plain[k], ckpt[k], atol=1e-6, rtol=1e-5), k


def test_presets_sizes():
    with torch.device("meta"):
        xl = build_transformer("EasyAnimate-XL/2", motion_module_mode="none")
        s = build_transformer("EasyAnimate-S/2")
    n = sum(p.numel() for p in xl.parameters())
    assert 600e6 < n < 620e6, n  # PixArt-XL-2: about 611M
    assert xl.inner_dim == 1152 and len(xl.transformer_blocks) == 28
    assert s.inner_dim == 384 and len(s.motion_modules) == 12
    with pytest.raises(ValueError, match="choose from"):
        build_transformer("EasyAnimate-H/2")


def test_preset_values_can_be_overridden():
    with torch.device("meta"):
        m = build_transformer("EasyAnimate-S/2", caption_channels=32, num_layers=3, sample_size=16)
    assert m.config.caption_channels == 32 and len(m.transformer_blocks) == 3 and m.config.sample_size == 16


def test_text_reading_motion_modules_start_as_identity_and_read_the_caption(tmp_path):
    """`motion_text_attention`: the motion modules cross-attend to the caption (the only part that knows the
    frame order can read how things should move). Added to trained modules it changes nothing until it learns
    (zero output projection); once it has weights, another caption changes the motion; it saves and loads."""
    from easyanimate.models import VideoTransformer3DModel, build_transformer

    torch.manual_seed(0)
    plain = build_transformer("tiny", sample_size=4, caption_channels=32, motion_module_mode="vanilla")
    with torch.no_grad():
        for p in plain.motion_modules.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    reads = build_transformer(
        "tiny", sample_size=4, caption_channels=32, motion_module_mode="vanilla", motion_text_attention=True
    )
    result = reads.load_state_dict(plain.state_dict(), strict=False)
    assert (
        result.missing_keys and all(".text_" in k for k in result.missing_keys) and not result.unexpected_keys
    )
    x, t, mask = torch.randn(2, 4, 5, 8, 8), torch.tensor([500, 500]), torch.ones(2, 7)
    caption, other = torch.randn(2, 7, 32), torch.randn(2, 7, 32)
    with torch.no_grad():
        assert torch.equal(plain(x, t, caption, mask).sample, reads(x, t, caption, mask).sample)
        for name, p in reads.named_parameters():
            if "text_attn.to_out" in name:
                p.add_(torch.randn_like(p) * 0.1)
        a, b = reads(x, t, caption, mask).sample, reads(x, t, other, mask).sample
        module = reads.motion_modules["0"]
        seq, ids = torch.randn(3, 5, module.dim), torch.arange(5)
        ctx = reads.caption_projection(caption).view(2, 7, -1)
        direct = module(seq, ids, ctx[:1].expand(3, -1, -1)) - module(seq, ids, ctx[1:].expand(3, -1, -1))
    assert direct.abs().max() > 1e-3  # the module itself reads the caption
    assert not torch.allclose(a - b, plain(x, t, caption, mask).sample - plain(x, t, other, mask).sample)
    reads.save_pretrained(tmp_path / "t")
    again = VideoTransformer3DModel.from_pretrained(tmp_path / "t")
    assert again.config.motion_text_attention and torch.equal(again(x, t, caption, mask).sample, a)
