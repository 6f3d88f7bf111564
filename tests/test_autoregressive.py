"""Temporal pyramid (autoregressive generation with a compressed history): causal motion modules, per-frame
timesteps, the frame-list forward over frames of different sizes, the training objective and the sampler."""

from __future__ import annotations

import pytest
import torch

from easyanimate.models.presets import build_transformer


def tiny(mode: str = "vanilla", causal: bool = True, **kw):
    torch.manual_seed(0)
    model = build_transformer(
        "tiny", sample_size=8, motion_module_mode=mode, motion_causal=causal, **kw
    ).eval()
    with torch.no_grad():  # non-zero motion modules and long skips so frames interact
        for p in [*model.motion_modules.parameters(), *model.skip_linears.parameters()]:
            p.add_(torch.randn_like(p) * 0.1)
    return model


def inputs(f: int = 4, size: int = 8, b: int = 2):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 4, f, size, size, generator=g)
    text = torch.randn(b, 6, 32, generator=g)
    mask = torch.ones(b, 6)
    mask[1, 4:] = 0
    t = torch.rand(b, f, generator=g) * 1000
    return x, t, text, mask


@pytest.mark.parametrize("mode", ["vanilla", "hybrid"])
def test_causal_modules_never_look_ahead(mode):
    model = tiny(mode, use_long_skips=True)
    x, t, text, mask = inputs()
    with torch.no_grad():
        out = model(x, t, text, encoder_attention_mask=mask).sample
        changed = x.clone()
        changed[:, :, 2:] = torch.randn_like(changed[:, :, 2:])
        again = model(changed, t, text, encoder_attention_mask=mask).sample
    assert torch.allclose(out[:, :, :2], again[:, :, :2], atol=1e-5)  # frames 0, 1 do not see 2, 3
    assert not torch.allclose(out[:, :, 2:], again[:, :, 2:], atol=1e-3)
    # and a non-causal model does look ahead (the test can fail)
    loose = tiny(mode, causal=False, use_long_skips=True)
    with torch.no_grad():
        a = loose(x, t, text, encoder_attention_mask=mask).sample
        b = loose(changed, t, text, encoder_attention_mask=mask).sample
    assert not torch.allclose(a[:, :, :2], b[:, :, :2], atol=1e-3)


def test_per_frame_timesteps_match_one_timestep_per_video():
    model = tiny()
    x, _, text, mask = inputs()
    t = torch.tensor([300.0, 700.0])
    with torch.no_grad():
        one = model(x, t, text, encoder_attention_mask=mask).sample
        per = model(x, t[:, None].expand(-1, 4), text, encoder_attention_mask=mask).sample
    assert torch.allclose(one, per, atol=1e-6)
    with pytest.raises(ValueError, match="per-frame timesteps must be"):
        model(x, torch.zeros(2, 3), text)


@pytest.mark.parametrize("mode", ["vanilla", "hybrid"])
def test_frame_list_of_one_size_equals_the_whole_clip(mode):
    model = tiny(mode, use_long_skips=True)
    x, t, text, mask = inputs()
    with torch.no_grad():
        whole = model(x, t, text, encoder_attention_mask=mask).sample
        last = model(list(x.unbind(2)), t, text, encoder_attention_mask=mask).sample
    assert last.shape == whole[:, :, -1].shape
    assert torch.allclose(last, whole[:, :, -1], atol=1e-5)


def test_frame_list_takes_a_compressed_history():
    """Older frames at 1/2 and 1/4 size: the present frame's prediction depends on them, has its own size, and
    costs fewer FLOPs than with a full-size history."""
    from torch.utils.flop_counter import FlopCounterMode

    model = tiny()
    x, t, text, mask = inputs(size=16)
    full = list(x.unbind(2))
    coarse = [
        torch.nn.functional.avg_pool2d(full[0], 4),
        torch.nn.functional.avg_pool2d(full[1], 2),
        *full[2:],
    ]
    with torch.no_grad():
        with FlopCounterMode(display=False) as c_full:
            a = model(full, t, text, encoder_attention_mask=mask).sample
        with FlopCounterMode(display=False) as c_coarse:
            b = model(coarse, t, text, encoder_attention_mask=mask).sample
        moved = [coarse[0] + 1.0, *coarse[1:]]
        c = model(moved, t, text, encoder_attention_mask=mask).sample
    assert a.shape == b.shape == (2, 4, 16, 16)
    assert not torch.allclose(b, c, atol=1e-4)  # the oldest (1/4-size) frame still reaches the present
    assert c_coarse.get_total_flops() < 0.85 * c_full.get_total_flops()
    with pytest.raises(ValueError, match="must divide the largest"):
        model([full[0][..., :12, :12], full[1]], t[:, :2], text)


def test_set_autoregressive_keeps_weights_and_checks_the_layout():
    model = tiny(causal=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.set_autoregressive([1, 2, 4])
    assert model.config.motion_causal and model.config.autoregressive_history == [1, 2, 4]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.causal for m in model.motion_modules.children())
    with pytest.raises(ValueError, match="powers of two that grow"):
        model.set_autoregressive([2, 1])
    with pytest.raises(ValueError, match="temporal or full motion modules"):
        build_transformer("tiny", motion_module_mode="grid", motion_causal=True, autoregressive_history=[1])


def test_objective_trains_one_present_frame_from_the_compressed_history():
    from easyanimate.diffusion.objectives import Objective
    from easyanimate.diffusion.pyramid import PyramidSchedule
    from easyanimate.diffusion.temporal_pyramid import TemporalPyramid

    temporal = TemporalPyramid((1, 2, 4))
    x0 = torch.randn(2, 4, 6, 16, 16)
    seen = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        batch = (
            Objective("flow", pyramid=PyramidSchedule(2))
            .autoregressive(temporal)
            .noise(x0, torch.randn_like(x0), gen)
        )
        frames = batch.model_input
        n = len(frames) - 1
        seen.add(n)
        assert [f.shape[-1] for f in frames[:-1]] == [16 // f for f in (4, 2, 1)][3 - n :]
        assert batch.timesteps.shape == (2, n + 1) and (batch.timesteps[:, :-1] == 0).all()
        assert batch.target.shape == frames[-1].shape and frames[-1].ndim == 4
        if n:  # the newest history frame is the clean frame just before the present one, uncompressed
            assert any(torch.equal(frames[-2], x0[:, :, i]) for i in range(6))
    assert seen == {0, 1, 2, 3}  # 3: the window; frames further back are not seen


def test_pipeline_generates_frame_by_frame(tmp_path):
    """A tiny autoregressive pipeline: every latent frame sampled alone, a start image as frame 0, a video
    longer than the window, and the sizes the compressed history needs."""
    import numpy as np
    from conftest import make_pipeline

    from easyanimate.models.loading import pipeline_shape_rule
    from easyanimate.pipeline import EasyAnimatePipeline

    folder = make_pipeline(tmp_path / "flow", sampler="Flow", prediction_type="flow")
    pipe = EasyAnimatePipeline.from_pretrained(folder)
    pipe.transformer.set_autoregressive([1, 2])
    pipe.save_pretrained(tmp_path / "ar")
    pipe = EasyAnimatePipeline.from_pretrained(tmp_path / "ar")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.temporal_pyramid.history == (1, 2)
    assert pipe.size_factor == 32 == pipeline_shape_rule(str(tmp_path / "ar")).size_multiple
    calls = []
    real = pipe.transformer.forward

    def spy(hidden_states, *a, **kw):
        calls.append([tuple(x.shape[-2:]) for x in hidden_states])
        return real(hidden_states, *a, **kw)

    pipe.transformer.forward = spy
    temporal_ratio = pipe.vae.temporal_compression_ratio
    frames = 1 + 4 * temporal_ratio  # 5 latent frames, more than the 2-frame window
    out = pipe("a red circle moving left", num_frames=frames, height=32, width=32, num_inference_steps=2,
               generator=torch.Generator().manual_seed(0)).frames  # fmt: skip
    assert out.shape == (1, frames, 32, 32, 3) and np.isfinite(out).all()
    assert len(calls) == 5 * 2
    assert calls[0] == [(4, 4)] and calls[2] == [(4, 4), (4, 4)] and calls[-1] == [(2, 2), (4, 4), (4, 4)]
    # image-to-video for free: the start image's latent is frame 0, only the 4 later frames are sampled
    calls.clear()
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    pipe("a red circle", num_frames=frames, height=32, width=32, num_inference_steps=2, start_image=image)
    assert len(calls) == 4 * 2 and len(calls[0]) == 2
    # with the spatial pyramid's sampler too: the start image is frame 0, later frames start coarse
    from easyanimate.diffusion.pyramid import PyramidSchedule
    from easyanimate.diffusion.samplers import get_scheduler

    pipe.scheduler = get_scheduler("Pyramid", "flow", pyramid=PyramidSchedule(2))
    calls.clear()
    pipe("a red circle", num_frames=frames, height=32, width=32, num_inference_steps=2, start_image=image)
    assert len(calls) == 4 * 2 and calls[0] == [(4, 4), (2, 2)] and calls[1] == [(4, 4), (4, 4)]
    with pytest.raises(ValueError, match="frame by frame from text or from a start image"):
        pipe("a red circle", num_frames=frames, height=32, width=32, end_image=image)
    with pytest.raises(ValueError, match="multiples of 32"):
        pipe("a red circle", num_frames=frames, height=16, width=16)


@pytest.mark.parametrize("mode", ["vanilla", "hybrid"])
def test_frame_cache_gives_the_same_prediction_for_less(mode):
    """The history computed once (motion modules keep its attention inputs), then the present frame alone at
    every step: the same predictions as running the whole list each time, for a fraction of the FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    from easyanimate.models.frame_sequence import FrameCache

    model = tiny(mode, use_long_skips=True)
    x, _, text, mask = inputs(f=4, size=16)
    history = [torch.nn.functional.avg_pool2d(x[:, :, 0], 2), *x[:, :, 1:3].unbind(2)]
    cache = FrameCache()
    with torch.no_grad():
        for step, level in enumerate((900.0, 500.0, 100.0)):
            present = torch.randn(2, 4, 16 >> step % 2, 16 >> step % 2)  # spatial-pyramid stages change size
            t = torch.zeros(2, 4)
            t[:, -1] = level
            ref = model([*history, present], t, text, encoder_attention_mask=mask).sample
            with FlopCounterMode(display=False) as counted:
                got = model(
                    [*history, present], t, text, encoder_attention_mask=mask, frame_cache=cache
                ).sample
            assert torch.allclose(got, ref, atol=1e-5), step
            if step:  # after the first step the history is not recomputed
                with FlopCounterMode(display=False) as whole:
                    model([*history, present], t, text, encoder_attention_mask=mask)
                assert counted.get_total_flops() < 0.6 * whole.get_total_flops()
    loose = tiny(mode, causal=False)
    with pytest.raises(ValueError, match="causal motion modules"):
        loose([*history, present], t, text, frame_cache=FrameCache())


def test_predict_i2v_runs_an_autoregressive_model_unchanged(tmp_path):
    """The i2v script with a frame-by-frame model: the start image becomes latent frame 0 (no InP weights)."""
    import numpy as np
    from conftest import make_pipeline, run_python
    from PIL import Image

    from easyanimate.data.video_io import read_frames
    from easyanimate.pipeline import EasyAnimatePipeline

    pipe = EasyAnimatePipeline.from_pretrained(
        make_pipeline(tmp_path / "flow", sampler="Flow", prediction_type="flow")
    )
    pipe.transformer.set_autoregressive([1, 2])
    pipe.save_pretrained(tmp_path / "ar")
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(
        tmp_path / "a.png"
    )
    r = run_python(
        "predict_i2v.py", "--model", str(tmp_path / "ar"), "--start-image", str(tmp_path / "a.png"),
        "--prompt", "a red circle moving up", "--num-frames", "9", "--height", "32", "--width", "32",
        "--steps", "2", "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_frames(str(next((tmp_path / "out").glob("*.mp4")))).shape == (9, 32, 32, 3)


def test_trainer_and_latent_cache_share_the_size_factor(tmp_path):
    """Bucket sizes follow the smallest latent of a run: the spatial pyramid's coarsest stage or the most
    compressed history frame, whether the history comes from transformer_options or the model's own folder
    (the trainer and scripts/precompute.py both build their buckets with it)."""
    from easyanimate.config import load_config
    from easyanimate.training.config import TrainConfig
    from easyanimate.training.data import run_size_factor

    def factor(*overrides):
        return run_size_factor(load_config(TrainConfig, None, ["objective.kind=flow", *overrides]))

    assert factor("model.transformer=tiny") == 1
    assert factor("model.transformer=tiny", "objective.pyramid_stages=3") == 4
    assert (
        factor("model.transformer=tiny", "model.transformer_options={autoregressive_history: [1, 2, 8]}") == 8
    )
    folder = tmp_path / "ar"
    build_transformer(
        "tiny", motion_module_mode="vanilla", motion_causal=True, autoregressive_history=[1, 2]
    ).save_pretrained(folder)
    assert factor(f"model.transformer={folder}", "objective.pyramid_stages=2") == 2
    assert factor(f"model.transformer={folder}", "objective.pyramid_stages=3") == 4


@pytest.mark.parametrize("mode", ["vanilla", "hybrid"])
def test_a_chunk_after_a_cached_history_equals_the_whole_list(mode):
    """Several present frames denoised together (a chunk, 5D last entry): with no history they are the whole
    clip; after a cached history, the same predictions as the whole list run each time; causal among themselves."""
    from easyanimate.models.frame_sequence import FrameCache

    model = tiny(mode, use_long_skips=True)
    x, _, text, mask = inputs(f=5, size=16)
    t = torch.zeros(2, 5)
    t[:, 2:] = 600.0
    with torch.no_grad():
        whole = model(x, t, text, encoder_attention_mask=mask).sample
        first = model([x], t, text, encoder_attention_mask=mask).sample  # a chunk alone = the whole clip
        history = [torch.nn.functional.avg_pool2d(x[:, :, 0], 2), x[:, :, 1]]
        ref = model([*history, x[:, :, 2:]], t, text, encoder_attention_mask=mask).sample
        cache = FrameCache()
        got = model([*history, x[:, :, 2:]], t, text, encoder_attention_mask=mask, frame_cache=cache).sample
        again = model([*history, x[:, :, 2:]], t, text, encoder_attention_mask=mask, frame_cache=cache).sample
        moved = x[:, :, 2:].clone()
        moved[:, :, -1] += 1.0
        later = model([*history, moved], t, text, encoder_attention_mask=mask, frame_cache=cache).sample
    assert first.shape == whole.shape and torch.allclose(first, whole, atol=1e-5)
    assert got.shape == (2, 4, 3, 16, 16)
    assert torch.allclose(got, ref, atol=1e-5) and torch.allclose(again, ref, atol=1e-5)
    assert torch.allclose(
        later[:, :, :2], got[:, :, :2], atol=1e-5
    )  # earlier present frames do not look ahead
    assert not torch.allclose(later[:, :, 2], got[:, :, 2], atol=1e-3)


def test_chunked_objective_trains_whole_clips_and_continuations():
    """`autoregressive_chunk` C: the first chunk (no history, the whole clip here) half the time, otherwise a
    chunk of max(1, C - history) frames after the compressed history; one noise level per chunk."""
    from easyanimate.diffusion.objectives import Objective
    from easyanimate.diffusion.pyramid import PyramidSchedule
    from easyanimate.diffusion.temporal_pyramid import TemporalPyramid, temporal_pyramid_of

    temporal = TemporalPyramid((1, 2), chunk=5)
    assert [temporal.present_count(d) for d in range(5)] == [5, 4, 3, 3, 3]
    assert temporal_pyramid_of({"autoregressive_history": [1, 2], "autoregressive_chunk": 5}) == temporal
    with pytest.raises(ValueError, match="at least 1"):
        TemporalPyramid((1,), chunk=0)
    x0 = torch.randn(2, 4, 5, 16, 16)
    objective = Objective("flow", pyramid=PyramidSchedule(2)).autoregressive(temporal)
    gen = torch.Generator().manual_seed(0)
    whole, seen = 0, set()
    for _ in range(60):
        batch = objective.noise(x0, torch.randn_like(x0), gen)
        *history, present = batch.model_input
        n = present.shape[2]
        assert present.ndim == 5 and batch.target.shape == present.shape
        assert n == min(temporal.present_count(len(history)), 5 - len(history)) or len(history) == 2
        assert batch.timesteps.shape == (2, len(history) + n)
        assert (batch.timesteps[:, : len(history)] == 0).all()
        assert (batch.timesteps[:, len(history) :] == batch.timesteps[:, -1:]).all()
        whole += not history
        seen.add(len(history))
    assert 20 < whole < 45 and seen == {0, 1, 2}
    # fixed-level noising (caption sensitivity): a clip that fits one chunk is the first chunk
    fixed = objective.noise_fixed(x0, torch.randn_like(x0), 0.9)
    assert len(fixed.model_input) == 1 and fixed.model_input[0].shape[2] == 5
    # `first_chunk_share`: 1 trains whole clips only, 0 draws the start uniformly (first chunk 1/5 of the time)
    for share, low, high in ((1.0, 60, 60), (0.0, 4, 22)):
        objective = Objective("flow", first_chunk_share=share).autoregressive(temporal)
        whole = sum(len(objective.noise(x0, torch.randn_like(x0), gen).model_input) == 1 for _ in range(60))
        assert low <= whole <= high, (share, whole)
    with pytest.raises(ValueError, match="first_chunk_share"):
        Objective("flow", first_chunk_share=1.5)


def test_pipeline_generates_chunk_by_chunk_with_two_experts(tmp_path):
    """A chunked model (chunk 3, window 2): the first 3 latent frames together, then one at a time after the
    history; joined as two experts, each step runs the expert for its level with its own history cache."""
    import numpy as np
    from conftest import make_pipeline

    from easyanimate.pipeline import EasyAnimatePipeline
    from easyanimate.pipeline.experts import make_experts

    folder = make_pipeline(tmp_path / "flow", sampler="Flow", prediction_type="flow")
    pipe = EasyAnimatePipeline.from_pretrained(folder)
    pipe.transformer.set_autoregressive([1, 2], chunk=3)
    pipe.save_pretrained(tmp_path / "ar")
    pipe = EasyAnimatePipeline.from_pretrained(tmp_path / "ar")
    assert pipe.temporal_pyramid.chunk == 3
    with torch.no_grad():
        for p in pipe.transformer.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    pipe.save_pretrained(tmp_path / "ar2")
    make_experts(str(tmp_path / "ar"), str(tmp_path / "ar2"), 0.5, str(tmp_path / "joined"))
    pipe = EasyAnimatePipeline.from_pretrained(tmp_path / "joined")
    pipe.set_progress_bar_config(disable=True)
    calls = []
    for name in ("transformer", "transformer_2"):
        getattr(pipe, name).register_forward_pre_hook(
            lambda m, a, name=name: calls.append((name, len(a[0]), tuple(a[0][-1].shape), float(a[1][0, -1])))
        )
    frames = 1 + 4 * pipe.vae.temporal_compression_ratio  # 5 latent frames: chunks of 3, 1, 1
    out = pipe("a red circle moving left", num_frames=frames, height=32, width=32, num_inference_steps=2,
               generator=torch.Generator().manual_seed(0)).frames  # fmt: skip
    assert out.shape == (1, frames, 32, 32, 3) and np.isfinite(out).all()
    assert [(n, shape[2] if len(shape) == 5 else 1) for _, n, shape, _ in calls] == [(1, 3)] * 2 + [
        (3, 1)
    ] * 4
    assert all((who == "transformer") == (t >= 500) for who, _, _, t in calls), calls
    assert {who for who, *_ in calls} == {"transformer", "transformer_2"}
    with pytest.raises(ValueError, match="must generate the same way"):
        plain = make_pipeline(tmp_path / "plain", sampler="Flow", prediction_type="flow")
        make_experts(plain, str(tmp_path / "ar2"), 0.5, str(tmp_path / "bad"))


def test_pyramid_stage_weights_pick_the_stages_training_draws():
    """`objective.pyramid_stage_weights`: [0, 0, 1] trains only the coarsest stage (a high-noise expert's run);
    bad weights are refused in one line naming the key."""
    from easyanimate.config import load_config
    from easyanimate.training.config import TrainConfig

    def objective(*overrides):
        return load_config(
            TrainConfig, None, ["objective.kind=flow", "objective.pyramid_stages=3", *overrides]
        )

    coarse = objective("objective.pyramid_stage_weights=[0, 0, 1]").objective.build()
    uniform = objective().objective.build()
    x0 = torch.randn(2, 4, 16, 16)
    gen = torch.Generator().manual_seed(0)
    sizes = {coarse.noise(x0, torch.randn_like(x0), gen).model_input.shape[-1] for _ in range(20)}
    levels = torch.cat([coarse.noise(x0, torch.randn_like(x0), gen).timesteps for _ in range(20)])
    assert sizes == {4} and levels.min() >= 1000 * 2 / 3 - 1e-3
    assert {uniform.noise(x0, torch.randn_like(x0), gen).model_input.shape[-1] for _ in range(30)} == {
        4,
        8,
        16,
    }
    for bad in ("[1, 1]", "[0, 0, 0]", "[1, -1, 1]"):
        with pytest.raises(ValueError, match="pyramid_stage_weights must be 3 non-negative"):
            objective(f"objective.pyramid_stage_weights={bad}")


def test_history_noise_corrupts_only_the_history_and_keeps_its_level_zero():
    """`objective.history_noise` h: each sample's history frames become (1 - s) x + s n, one s drawn in [0, h] per
    sample, the model still told level 0; the present frame, its level and target are as without it."""
    from easyanimate.diffusion.objectives import Objective
    from easyanimate.diffusion.temporal_pyramid import TemporalPyramid
    from easyanimate.training.config import ObjectiveConfig

    temporal = TemporalPyramid((1, 1, 1), chunk=1)  # frame by frame, uncompressed history: comparable to x0
    x0 = torch.randn(64, 4, 4, 16, 16)
    clean = Objective("flow").autoregressive(temporal)
    noisy = Objective("flow", history_noise=0.5).autoregressive(temporal)
    noise = torch.randn_like(x0)
    for seed in range(20):
        a = clean.noise(x0, noise, torch.Generator().manual_seed(seed))
        if len(a.model_input) >= 3:
            break
    b = noisy.noise(x0, noise, torch.Generator().manual_seed(seed))
    history = len(a.model_input) - 1
    assert history >= 2 and len(b.model_input) == history + 1
    for k in range(history):
        assert torch.equal(a.model_input[k], x0[:, :, k])  # without it: the real frames
    assert torch.equal(b.model_input[-1], a.model_input[-1]) and torch.equal(b.target, a.target)
    assert torch.equal(b.timesteps, a.timesteps) and (b.timesteps[:, :history] == 0).all()
    # s per sample and frame from the projection on the clean frame: (1 - s) up to the noise's small overlap
    s = torch.stack(
        [
            1 - (b.model_input[k] * x0[:, :, k]).flatten(1).sum(1) / x0[:, :, k].flatten(1).pow(2).sum(1)
            for k in range(history)
        ]
    )
    assert s.min() > -0.1 and s.max() < 0.6  # within [0, h]
    assert s[0].min() < 0.1 and s[0].max() > 0.4  # drawn across it
    assert (s - s[0]).abs().max() < 0.1  # one level for all of a sample's history frames
    with pytest.raises(ValueError, match="history_noise"):
        Objective("flow", history_noise=1.5)
    with pytest.raises(ValueError, match="history_noise"):
        ObjectiveConfig(history_noise=-0.1)
