"""Upstream EasyAnimate v1-v3 transformers through the calls a user makes: parity with upstream's own outputs
(../shared/upstream-parity/, skipped with the reason when absent) and layouts checked against the real-size key
manifest (or, without it, against upstream-named files we build)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from conftest import ROOT
from diffusers import PixArtTransformer2DModel
from safetensors.torch import load_file, save_file

from easyanimate.models.motion_adapter import UPSTREAM_LAYOUTS
from easyanimate.models.transformer3d import VideoTransformer3DModel
from easyanimate.models.upstream_transformer import (
    convert_state_dict,
    load_transformer_checkpoint,
    upstream_config,
)

PARITY = os.path.join(os.path.dirname(ROOT), "shared", "upstream-parity")
needs_parity = pytest.mark.skipif(
    not os.path.isdir(PARITY), reason=f"{PARITY} (upstream EasyAnimate's reference outputs) is not here"
)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def upstream_folder(tmp_path, version: str) -> str:
    """The parity files laid out as the upstream transformer folder a user downloads."""
    folder = tmp_path / f"{version}-transformer"
    folder.mkdir()
    shutil.copy(os.path.join(PARITY, f"{version}_transformer_config.json"), folder / "config.json")
    shutil.copy(
        os.path.join(PARITY, f"{version}_transformer.safetensors"),
        folder / "diffusion_pytorch_model.safetensors",
    )
    return str(folder)


def run(model, io, prefix="", **extra):
    """The model on the saved inputs (`prefix` "image_": the one-frame ones, with the same text and CLIP)."""
    kw = {}
    for k in ("inpaint_latents", "clip_encoder_hidden_states", "clip_attention_mask"):
        if prefix + k in io:
            kw[k] = io[prefix + k]
        elif k in io and k != "inpaint_latents":
            kw[k] = io[k]
    with torch.no_grad():
        return model(
            io[prefix + "hidden_states"],
            io["timestep"],
            io["encoder_hidden_states"],
            io["encoder_attention_mask"],
            **{**kw, **extra},
        ).sample


def silence_motion(model) -> None:
    with torch.no_grad():
        for module in model.motion_modules._modules.values():
            module.proj_out.weight.zero_()
            module.proj_out.bias.zero_()


@needs_parity
@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_upstream_transformer_folder_computes_what_upstream_computes(tmp_path, version):
    model = VideoTransformer3DModel.from_pretrained(upstream_folder(tmp_path, version)).eval()
    io = load_file(os.path.join(PARITY, f"{version}_io.safetensors"))
    assert rel(run(model, io), io["output"]) <= 1e-4
    if version == "v3":
        assert (
            rel(run(model, io, prefix="image_"), io["image_output"]) <= 1e-4
        )  # one frame: motion still runs
        silence_motion(model)
        no_clip = run(model, io, clip_encoder_hidden_states=None, clip_attention_mask=None)
        assert rel(no_clip, io["output_no_motion_no_clip"]) <= 1e-4
    else:
        silence_motion(model)
        assert rel(run(model, io), io["output_no_motion"]) <= 1e-4


@needs_parity
def test_v1_quick_start_pixart_plus_bare_motion_module_file(tmp_path):
    """v1 as released: PixArt-XL-2's weights + `easyanimate_v1_mm.safetensors`, whose layout is named."""
    config = json.load(open(os.path.join(PARITY, "v1_transformer_config.json")))
    state = load_file(os.path.join(PARITY, "v1_transformer.safetensors"))
    pixart_keys = {k: v for k, v in state.items() if "attn_temporal" not in k}
    keep = ("num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "num_layers",
            "cross_attention_dim", "attention_bias", "sample_size", "patch_size", "activation_fn",
            "num_embeds_ada_norm", "norm_elementwise_affine", "norm_eps", "caption_channels")  # fmt: skip
    pixart = PixArtTransformer2DModel(**{k: config[k] for k in keep}, norm_type="ada_norm_single")
    pixart.load_state_dict(pixart_keys)
    pixart.save_pretrained(tmp_path / "pixart")
    model = VideoTransformer3DModel.from_pixart(str(tmp_path / "pixart")).eval()
    mm = os.path.join(PARITY, "v1_mm.safetensors")
    with pytest.raises(ValueError, match="does not record its layout"):
        model.load_motion_modules(mm)
    model.load_motion_modules(mm, layout="easyanimate-v1")
    io = load_file(os.path.join(PARITY, "v1_io.safetensors"))
    assert rel(run(model.eval(), io), io["output"]) <= 1e-4
    with pytest.raises(ValueError, match="not an upstream motion-module file"):
        model.load_motion_modules(os.path.join(PARITY, "v1_transformer.safetensors"), layout="easyanimate-v1")
    # a bare PixArt checkpoint over the weights (upstream's portrait model is one)
    save_file(pixart_keys, str(tmp_path / "portrait.safetensors"))
    fresh = VideoTransformer3DModel.from_pixart(str(tmp_path / "pixart"))
    load_transformer_checkpoint(fresh, str(tmp_path / "portrait.safetensors"))
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in pixart_keys.items())


REAL = dict(  # PixArt-XL-2 at 512 px, as the releases are
    num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
    cross_attention_dim=1152, attention_bias=True, sample_size=64, patch_size=2,
    activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_elementwise_affine=False, norm_eps=1e-6,
    caption_channels=4096, norm_type="ada_norm_single",
)  # fmt: skip
MM = dict(num_transformer_block=1, temporal_attention_dim_div=1, temporal_position_encoding=True,
          temporal_position_encoding_max_len=4096)  # fmt: skip
RELEASES = {
    "v2_transformer": dict(REAL, basic_block_type="motionmodule", motion_module_type="Vanilla", enable_uvit=True,
                           motion_module_kwargs=dict(MM, num_attention_heads=8, block_size=1,
                                                     attention_block_types=["Temporal_Self", "Temporal_Self"])),
    "v3_transformer": dict(REAL, in_channels=12, basic_block_type="global_motionmodule",
                           motion_module_type="Vanilla", enable_uvit=True,
                           motion_module_kwargs_even=dict(MM, num_attention_heads=16, block_size=1,
                                                          attention_block_types=["Temporal_Self", "Temporal_Self"]),
                           motion_module_kwargs_odd=dict(MM, num_attention_heads=16, block_size=1,
                                                         attention_block_types=["Temporal_Self", "Global_Self"])),
}  # fmt: skip


def to_upstream_key(key: str) -> str:
    """Upstream's name for one of our keys: the inverse of the conversion, written out here independently."""
    parts = key.split(".")
    if parts[0] == "skip_linears":
        return f"long_connect_fc.{int(parts[1]) - 15}.{parts[2]}"
    if parts[0] != "motion_modules":
        return key
    block, rest = parts[1], ".".join(parts[2:])
    inner = "temporal_transformer."
    if rest.startswith("layers."):
        _, i, kind, *tail = rest.split(".")
        inner += f"transformer_blocks.0.{'attention_blocks' if kind == 'attn' else 'norms'}.{i}." + ".".join(
            tail
        )
    elif rest.startswith(("ff.", "ff_norm.")):
        inner += "transformer_blocks.0." + rest
    else:
        inner += rest
    return f"transformer_blocks.{block}.attn_temporal.{inner}"


def upstream_names(model: VideoTransformer3DModel) -> dict[str, tuple[int, ...]]:
    """What an upstream file for this model holds (names and shapes), frame-code buffers included."""
    names = {to_upstream_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    for key in list(names):
        if key.endswith("to_q.weight") and "attention_blocks" in key:
            names[key.replace("to_q.weight", "pos_encoder.pe")] = (1, 4096, names[key][1])
    return names


@pytest.mark.parametrize("release", list(RELEASES))
def test_release_layouts_convert_exactly(release):
    """Every key of the real-size release converts onto a parameter of the right shape, and every parameter is
    filled: from the manifest of the released files when ../shared is here, else from names built above."""
    with torch.device("meta"):
        model = VideoTransformer3DModel(**upstream_config(RELEASES[release]))
    manifest = os.path.join(PARITY, "manifest.json")
    if os.path.isfile(manifest):
        with open(manifest) as fh:
            layout = {k: tuple(v) for k, v in json.load(fh)["layouts"][release].items()}
    else:
        layout = upstream_names(model)
    converted = convert_state_dict({k: torch.empty(v, device="meta") for k, v in layout.items()})
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == own
    assert any(".pos_encoder.pe" in k for k in layout)  # dropped: we compute the frame code


def test_v1_motion_file_layout_and_presets():
    """The released v1 mm file's keys (manifest, or built) load onto PixArt-XL-2 in layout easyanimate-v1."""
    from easyanimate.models.upstream_transformer import convert_key

    with torch.device("meta"):
        model = VideoTransformer3DModel(**{k: v for k, v in REAL.items() if k != "norm_type"})
        model.set_motion_layout(**UPSTREAM_LAYOUTS["easyanimate-v1"])
    manifest = os.path.join(PARITY, "manifest.json")
    if os.path.isfile(manifest):
        with open(manifest) as fh:
            keys = list(json.load(fh)["layouts"]["v1_mm_file"])
    else:
        keys = [k for k in upstream_names(model) if "attn_temporal" in k]
    ours = {k for k in model.state_dict() if k.startswith("motion_modules.")}
    assert {convert_key(k) for k in keys} - {None} == ours
    assert (
        model.motion_modules["0"].layers[0].grid == 2 and model.motion_modules["0"].layers[0].attn.heads == 8
    )


def test_other_folders_are_refused_by_name(tmp_path):
    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(ValueError, match="holds a AutoencoderKL, not a VideoTransformer3DModel"):
        VideoTransformer3DModel.from_pretrained(str(folder))
    bad = dict(RELEASES["v2_transformer"], patch_3d=True)
    with pytest.raises(ValueError, match="patch_3d=True is not supported"):
        upstream_config(bad)
