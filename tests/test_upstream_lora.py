"""Upstream EasyAnimate's kohya-style LoRA files: merged as upstream merges them (parity with upstream's own outputs
in ../shared/upstream-parity/), unloaded exactly, and every key of the released portrait LoRA's layout resolves
to a layer of the right shape in PixArt-XL-2 + T5-XXL."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file, save_file
from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

from easyanimate.models import build_transformer, build_vae
from easyanimate.models.kohya_lora import kohya_targets, merge_kohya_lora
from easyanimate.models.transformer3d import VideoTransformer3DModel
from easyanimate.pipeline import EasyAnimatePipeline, get_scheduler
from easyanimate.pipeline.adapters import load_lora, unload_loras

PARITY = os.path.join(os.path.dirname(ROOT), "shared", "upstream-parity")
needs_parity = pytest.mark.skipif(
    not os.path.isdir(PARITY), reason=f"{PARITY} (upstream EasyAnimate's reference outputs) is not here"
)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def parity_pipeline() -> EasyAnimatePipeline:
    base = os.path.join(PARITY, "lora_base")
    return EasyAnimatePipeline(
        vae=build_vae("tiny"),
        text_encoder=T5EncoderModel.from_pretrained(os.path.join(base, "text_encoder")).eval(),
        tokenizer=ByT5Tokenizer(),
        transformer=VideoTransformer3DModel.from_pixart(os.path.join(base, "transformer")).eval(),
        scheduler=get_scheduler("DPM++"),
    )


def outputs(pipe, io) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        run = lambda x: pipe.transformer(  # noqa: E731
            x.unsqueeze(2), io["timestep"], io["encoder_hidden_states"], io["encoder_attention_mask"]
        ).sample.squeeze(2)
        text = pipe.text_encoder(io["input_ids"]).last_hidden_state
        return run(io["hidden_states"]), run(io["rect_hidden_states"]), text


@needs_parity
def test_kohya_lora_merges_as_upstream_and_unloads_exactly():
    io = load_file(os.path.join(PARITY, "lora_io.safetensors"))
    pipe = parity_pipeline()
    base, rect, text = outputs(pipe, io)
    assert rel(base, io["base_output"]) < 1e-4 and rel(rect, io["rect_base_output"]) < 1e-4
    assert rel(text, io["te_base_output"]) < 1e-4
    load_lora(pipe, os.path.join(PARITY, "lora_kohya.safetensors"), weight=1.0)  # upstream's multiplier 1.0
    merged, _, merged_text = outputs(pipe, io)
    assert rel(merged, io["merged_output"]) < 1e-4, rel(merged, io["merged_output"])
    assert rel(merged_text, io["te_merged_output"]) < 1e-4, rel(merged_text, io["te_merged_output"])
    assert rel(merged, base) > 1e-3  # the LoRA did something
    unload_loras(pipe)
    again = outputs(pipe, io)
    assert torch.equal(again[0], base) and torch.equal(again[2], text)


def test_portrait_lora_layout_resolves_on_pixart_xl_and_t5_xxl():
    """The released easyanimate_portrait_lora.safetensors (rank 128): each of its keys names a layer of the
    right shape. The layout comes from the manifest when ../shared is here, else from a PixArt-XL-2 + T5-XXL of
    our own (so a renamed layer is caught either way)."""
    with torch.device("meta"):
        transformer = build_transformer("EasyAnimate-XL/2")
        t5 = T5EncoderModel(
            T5Config(
                d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, feed_forward_proj="gated-gelu"
            )
        )
    models = {"transformer": transformer, "text_encoder": t5}
    manifest = os.path.join(PARITY, "manifest.json")
    if os.path.isfile(manifest):
        with open(manifest) as fh:
            layout = json.load(fh)["layouts"]["portrait_lora_rank128"]
        state = {
            k: torch.empty(v if isinstance(v, list) else v["shape"], device="meta") for k, v in layout.items()
        }
    else:
        state = {}
        for part, model, prefix in (
            (transformer, "transformer", "lora_unet_"),
            (t5, "text_encoder", "lora_te_"),
        ):
            for name, module in part.named_modules():
                if isinstance(module, torch.nn.Linear) and "motion" not in name:
                    key = prefix + ("_" if model == "transformer" else "") + name.replace(".", "_")
                    state[f"{key}.lora_down.weight"] = torch.empty(128, module.in_features, device="meta")
                    state[f"{key}.lora_up.weight"] = torch.empty(module.out_features, 128, device="meta")
    targets = kohya_targets(models, state)
    assert len(targets) == len({k.split(".")[0] for k in state})
    assert {p for p, *_ in targets} == {"transformer", "text_encoder"}


def test_kohya_errors_name_the_key(tmp_path):
    torch.manual_seed(0)
    model = build_transformer("tiny", caption_channels=32)
    down, up = torch.randn(2, 32), torch.randn(32, 2)
    name = "lora_unet__transformer_blocks_0_attn1_to_q"
    good = {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up}
    before = model.transformer_blocks[0].attn1.to_q.weight.clone()
    bad = {**good, "lora_unet__transformer_blocks_9_attn1_to_q.lora_down.weight": torch.randn(2, 32)}
    with pytest.raises(ValueError, match="transformer_blocks_9_attn1_to_q' names no layer"):
        merge_kohya_lora({"transformer": model}, bad)
    assert torch.equal(model.transformer_blocks[0].attn1.to_q.weight, before)  # nothing half-applied
    wrong = {**good, f"{name}.lora_down.weight": torch.randn(2, 48)}
    with pytest.raises(ValueError, match="update for a layer of shape"):
        merge_kohya_lora({"transformer": model}, wrong)
    with pytest.raises(ValueError, match="for the text encoder, which this pipeline lacks"):
        merge_kohya_lora({"transformer": model}, {"lora_te_x.lora_down.weight": torch.zeros(1)})
    saved = merge_kohya_lora({"transformer": model}, good, weight=0.55)
    expected = before + 0.55 * up @ down  # no alpha: scale 1
    assert torch.allclose(model.transformer_blocks[0].attn1.to_q.weight, expected, atol=1e-6)
    assert torch.equal(saved["transformer"]["transformer_blocks_0_attn1_to_q"], before)
    path = tmp_path / "empty.safetensors"
    save_file({"w": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match="holds no LoRA weights"):
        load_lora(None, str(path))
