"""diffusers users' habits on our pipeline: DiffusionPipeline.from_pretrained, prompt_embeds, num_videos_per_prompt,
callback_on_step_end with tensor inputs, the LoRA API, dtype."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import make_pipeline
from diffusers import DiffusionPipeline
from diffusers.callbacks import PipelineCallback
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from easyanimate.pipeline import EasyAnimatePipeline

PROMPT = "a red circle moving left on a gray background"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return make_pipeline(tmp_path_factory.mktemp("t2v"))


@pytest.fixture()
def pipe(folder) -> EasyAnimatePipeline:
    p = EasyAnimatePipeline.from_pretrained(folder)
    p.set_progress_bar_config(disable=True)
    return p


def gen(pipe, prompt=PROMPT, seed=0, **kw):
    args = dict(num_frames=5, height=32, width=32, num_inference_steps=2, output_type="pt")
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), **{**args, **kw}).frames


def test_diffusion_pipeline_loads_our_folder(folder, pipe):
    """diffusers' own entry point gives our class (diffusers has an unrelated class of the same name, which a
    plain `_class_name` resolved to) and the same video; `dtype=` sets the weights' dtype."""
    with open(os.path.join(folder, "model_index.json")) as fh:
        assert json.load(fh)["_class_name"] == ["easyanimate_pipeline", "EasyAnimatePipeline"]
    loaded = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert isinstance(loaded, EasyAnimatePipeline)
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(gen(loaded), gen(pipe))
    half = EasyAnimatePipeline.from_pretrained(folder, dtype=torch.bfloat16)
    assert half.transformer.dtype == torch.bfloat16 and half.vae.dtype == torch.bfloat16


def test_our_from_pretrained_never_imports_the_folder_module(tmp_path, folder):
    """Our class loads a folder without importing its entry module (diffusers would copy it into its module
    cache first: two processes loading one folder at once raced on that copy), so a changed module never runs;
    diffusers' DiffusionPipeline still refuses it without trust_remote_code."""
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    marker = tmp_path / "ran"
    (copy / "easyanimate_pipeline.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    assert isinstance(EasyAnimatePipeline.from_pretrained(str(copy)), EasyAnimatePipeline)
    assert not marker.exists()
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(str(copy))
    # two processes loading one folder at the same moment, with a fresh module cache each time
    code = (
        "import sys; from easyanimate.pipeline import EasyAnimatePipeline as P; "
        "assert isinstance(P.from_pretrained(sys.argv[1]), P)"
    )
    for attempt in range(3):
        env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / f"modules{attempt}"), "OMP_NUM_THREADS": "1"}
        procs = [
            subprocess.Popen([sys.executable, "-c", code, folder], env=env, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        try:
            for proc in procs:
                assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
        finally:  # a failed or hung load leaves no process behind
            for proc in procs:
                proc.kill()
                proc.wait()
        assert not (
            tmp_path / f"modules{attempt}" / "diffusers_modules" / "local" / "easyanimate_pipeline.py"
        ).exists()


def test_prompt_embeds_and_masks_equal_prompts(pipe):
    embeds, mask, neg, neg_mask = pipe.encode_prompt(PROMPT, negative_prompt="blurry")
    assert embeds.shape[0] == 1 and neg.shape == embeds.shape and mask.shape == embeds.shape[:2]
    by_text = gen(pipe, negative_prompt="blurry")
    by_embeds = gen(
        pipe,
        prompt=None,
        prompt_embeds=embeds,
        prompt_attention_mask=mask,
        negative_prompt_embeds=neg,
        negative_prompt_attention_mask=neg_mask,
    )
    assert torch.equal(by_text, by_embeds)
    assert not torch.equal(by_text, gen(pipe))  # the negative prompt mattered
    with pytest.raises(ValueError, match="give a prompt or prompt_embeds"):
        gen(pipe, prompt=None)


def test_num_videos_per_prompt(pipe):
    """Two prompts x three videos: six videos, grouped by prompt; each draws its own noise."""
    prompts = [PROMPT, "a blue square moving up on a white background"]
    videos = gen(pipe, prompt=prompts, num_videos_per_prompt=3)
    assert videos.shape[0] == 6
    assert not torch.allclose(videos[0], videos[1])  # same prompt, other noise
    embeds = pipe.encode_prompt(prompts, num_videos_per_prompt=3)[0]
    assert torch.equal(embeds[0], embeds[2]) and not torch.equal(embeds[2], embeds[3])
    # the first video used the first noise draw: it is the single video of the same seed
    assert torch.allclose(videos[0], gen(pipe, prompt=PROMPT), atol=1e-5)


def test_callback_on_step_end_sees_and_replaces_tensors(pipe):
    seen = []

    def callback(p, step, timestep, kwargs):
        assert p is pipe
        seen.append((step, float(timestep), sorted(kwargs)))
        if step == 1:  # replace the latents after the last step: the decoded video is of zeros
            return {"latents": torch.zeros_like(kwargs["latents"])}
        return kwargs

    out = gen(
        pipe, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]
    )
    assert [s for s, _, _ in seen] == [0, 1] and seen[0][2] == ["latents", "prompt_embeds"]
    zeros = pipe.decode_latents(torch.zeros(1, pipe.latent_channels, pipe.vae.latent_frames(5), 4, 4))
    assert torch.allclose(out, zeros, atol=1e-6)

    class CountSteps(PipelineCallback):
        tensor_inputs = ["latents"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            self.calls = getattr(self, "calls", 0) + 1
            return callback_kwargs

    counter = CountSteps()
    gen(pipe, callback_on_step_end=counter)
    assert counter.calls == 2
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        gen(pipe, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["noise"])


def _lora_file(pipe, path, prefixed: bool) -> str:
    """A LoRA for the pipeline's transformer saved the way our training saves one (peft keys)."""
    torch.manual_seed(1)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v"]), "made")
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    state = get_peft_model_state_dict(pipe.transformer, adapter_name="made")
    pipe.transformer.delete_adapters("made")
    if prefixed:
        state = {f"transformer.{k}": v for k, v in state.items()}
    save_file(state, str(path))
    return str(path)


@pytest.mark.parametrize("prefixed", [True, False])
def test_lora_api(tmp_path, pipe, prefixed):
    base = gen(pipe)
    path = _lora_file(pipe, tmp_path / "style.safetensors", prefixed)
    pipe.load_lora_weights(path, adapter_name="style")
    full = gen(pipe)
    assert not torch.allclose(full, base, atol=1e-4)
    pipe.unload_lora_weights()
    assert torch.equal(gen(pipe), base)  # unloading restores the base weights exactly
    pipe.load_lora_weights(path, adapter_name="style")
    pipe.set_adapters(["style"], [0.5])
    half = gen(pipe)
    assert not torch.allclose(half, full, atol=1e-4) and pipe.lora_weights() == {"style": 0.5}
    pipe.set_adapters(["style"], [1.0])
    pipe.fuse_lora()
    assert torch.allclose(gen(pipe), full, atol=1e-5)  # fused weights compute what the adapter did
    pipe.unfuse_lora()
    pipe.unload_lora_weights()
    assert torch.allclose(gen(pipe), base, atol=1e-5)  # unfusing subtracts the delta again (rounding)
    empty = tmp_path / "empty.safetensors"
    save_file({"weight": torch.zeros(2)}, str(empty))
    with pytest.raises(ValueError, match="holds no LoRA weights"):
        pipe.load_lora_weights(str(empty))
