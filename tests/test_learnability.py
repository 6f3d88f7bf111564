"""Can the demo transformer learn to follow a direction word? The four-clip overfit probe (issue #23): four
clips that differ only in "moving left / right / up / down", the whole transformer fine-tuned on them.

Measured on the shipped demo weights (9 frames, 150 steps, AdamW 5e-4; direction sensitivity = loss at noise
0.9 with the opposite direction word over the true one, minus 1; then one generation per caption):
logit-normal shift 1 (the old recipe) +0.6%, 1 of 4 right; logit-normal shift 5 +17%, 2 of 4; high_noise shift 1
-0.2%, 2 of 4; high_noise shift 5 +545%, 4 of 4 (+54%, 2 of 4 after 100 steps). The test fails when a change
stops the model from learning the word at the budget where it used to."""

from __future__ import annotations

import os

from conftest import ROOT

from easyanimate.diffusion.objectives import Objective
from easyanimate.eval.learnability import direction_probe
from easyanimate.pipeline.loading import load_pipeline

DEMO = os.path.join(ROOT, "models", "Diffusion_Transformer", "EasyAnimate-demo")


def test_the_demo_transformer_learns_the_direction_word_with_high_noise_training():
    pipe = load_pipeline(DEMO, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    weights = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    result = direction_probe(
        pipe, steps=150, objective=Objective("flow", flow_shift=5.0, time_sampling="high_noise")
    )
    assert result["direction_sensitivity"] > 1.0, result
    assert result["directions_right"] >= 3, result
    assert all(
        (pipe.transformer.state_dict()[k] == v).all() for k, v in weights.items()
    )  # a copy was trained


def test_held_out_looks_are_generated_and_scored_apart(tmp_path):
    """`held_out`: looks never trained on, generated and scored on their own (tiny model: the plumbing only)."""
    from conftest import make_pipeline

    pipe = load_pipeline(
        make_pipeline(tmp_path / "flow", sampler="Flow", prediction_type="flow"), device="cpu"
    )
    pipe.set_progress_bar_config(disable=True)
    result = direction_probe(pipe, steps=2, frames=5, size=32, sample_steps=2, clips=4, held_out=2)
    assert result["generated"] == 4 and result["held_out_generated"] == 8
    assert len(result["held_out_read"]) == 8 and 0 <= result["held_out_right"] <= 8
    assert isinstance(result["held_out_sensitivity"], float)
