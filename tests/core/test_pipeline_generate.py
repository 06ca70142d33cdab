"""Progressive generation on the tiny MovingBG model (CPU) and the sliding-window baseline."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F

from movingbg.models.config import MovingBGConfig
from movingbg.models.generator import MovingBGModel
from movingbg.pipelines import (GenerationOptions, SchedulerOptions, clip_seed, generate, plan_progressive,
                                sliding_window_generate)

H = W = 4            # latent size; maps are 8x larger
D = 32               # tiny cross-attention width

logging.getLogger("diffusers").setLevel(logging.ERROR)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model():
    """Tiny model whose zero-initialised parts are randomised, so condition / maps change the output."""
    torch.manual_seed(0)
    m = MovingBGModel(MovingBGConfig.tiny()).eval()
    with torch.no_grad():
        m.denoising_unet.conv_in.weight[:, 4:].normal_(0, 0.3)
        for enc in (m.fg_encoder, m.bg_encoder):
            enc.conv_out.weight.normal_(0, 0.05)
    return m


@pytest.fixture(scope="module")
def model64(model):
    """The same model in float64: batched vs sequential CFG then differ by the method, not by float32
    round-off of batch-1 vs batch-2 kernels (about 1e-6 in the U-Net output, which zero-SNR Euler's
    sigma_max = 4096 amplifies to about 5e-5 in the latents)."""
    return copy.deepcopy(model).double()


def encode(image: torch.Tensor) -> torch.Tensor:
    """Identity-ish VAE: ``(N, 3, 8h, 8w)`` 0..1 -> ``(N, 4, h, w)`` (8x8 mean, RGB + luma, in -1..1)."""
    pooled = F.avg_pool2d(image, 8) * 2 - 1
    return torch.cat([pooled, pooled.mean(1, keepdim=True)], 1)


def decode(latent: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode` on its RGB channels (nearest upsampling)."""
    return F.interpolate((latent[:, :3] + 1) / 2, scale_factor=8, mode="nearest")


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(3)
    frames = 12
    return dict(
        ref_latent=torch.randn(1, 4, H, W, generator=g),
        clip_embeds=torch.randn(1, 1, D, generator=g),
        pose_maps=torch.rand(frames, 3, 8 * H, 8 * W, generator=g),
        track_maps=torch.rand(frames, 3, 8 * H, 8 * W, generator=g),
    )


def run(model, inputs, num_frames, method=generate, **kwargs):
    """``generate`` with small defaults; GenerationOptions fields and generate keywords both accepted."""
    fields = set(GenerationOptions.__dataclass_fields__)
    opts = dict(steps=2, cfg_scale=1.0, clip_length=4, handover="latent")
    opts.update({k: kwargs.pop(k) for k in list(kwargs) if k in fields})
    args = dict(inputs, pose_maps=inputs["pose_maps"][:num_frames], track_maps=inputs["track_maps"][:num_frames],
                encode=encode, decode=decode)
    args.update(kwargs)
    return method(model, num_frames=num_frames, options=GenerationOptions(**opts), **args)


def test_output_length_for_several_lengths(model, inputs):
    for num_frames in (1, 3, 4, 6, 9):                      # < L, = L, not a multiple, 1 + k(L-1)
        res = run(model, inputs, num_frames, steps=1)
        clips = plan_progressive(num_frames, 4)
        assert res.latents.shape == (num_frames, 4, H, W) and res.latents.device.type == "cpu"
        assert res.latents.dtype == torch.float32 and torch.isfinite(res.latents).all()
        assert res.plan == tuple(clips) and res.method == "progressive"
        assert res.unet_calls == len(clips) and res.unet_frame_evals == sum(c.length for c in clips)
        assert len(res.handover_residuals) == len(clips) - 1


def test_seed_determinism(model, inputs):
    kw = dict(num_frames=6, cfg_scale=2.0, cfg_mode="sequential", seed=1234)
    a, b = run(model, inputs, **kw), run(model, inputs, **kw)
    assert torch.equal(a.latents, b.latents)
    c = run(model, inputs, **dict(kw, seed=1235))
    assert not torch.allclose(a.latents, c.latents, atol=1e-3)
    assert clip_seed(1234, 0) == 1234 and len({clip_seed(1234, k) for k in range(100)}) == 100
    big = run(model, inputs, 3, seed=2 ** 64 - 1, steps=1)  # ComfyUI seeds go up to 2**64 - 1
    assert torch.isfinite(big.latents).all()


def test_reference_encoded_exactly_once(model, inputs, monkeypatch):
    runs = []
    original = model.encode_reference
    monkeypatch.setattr(model, "encode_reference", lambda *a, **k: runs.append(1) or original(*a, **k))
    res = run(model, inputs, 9, cfg_scale=2.0, cfg_mode="batched")  # 3 clips x 2 steps, branches batched
    assert len(runs) == 1 and res.reference_runs == 1
    assert res.unet_calls == 3 * 2 and res.unet_frame_evals == sum(c.length for c in res.plan) * 2 * 2
    base = run(model, inputs, 9, method=sliding_window_generate, window=4, overlap=1)
    assert len(runs) == 2 and base.reference_runs == 1


def test_bank_reused_by_every_clip_and_step(model, inputs, monkeypatch):
    banks = []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: banks.append(k["bank"]) or original(*a, **k))
    run(model, inputs, 6, cfg_scale=2.0, cfg_mode="sequential")
    conditional = [b for b in banks if b is not None]
    assert len(conditional) == len(banks) // 2 == 2 * 2      # uncond branch: no bank
    assert all(b is conditional[0] for b in conditional)


def test_on_step_every_step_of_every_clip(model, inputs):
    seen = []
    res = run(model, inputs, 9, steps=3, on_step=lambda c, s, n: seen.append((c, s, n)))
    assert seen == [(c, s, 3) for c in range(3) for s in range(3)] and res.steps == 3
    seen.clear()
    base = run(model, inputs, 9, steps=3, method=sliding_window_generate,
               on_step=lambda c, s, n: seen.append((c, s, n)), window=4, overlap=1)
    assert seen == [(0, s, 3) for s in range(3)] and base.unet_calls == 3 * len(base.plan)


@pytest.mark.parametrize("method", [generate, sliding_window_generate])
def test_interrupt_stops_within_one_step(model, inputs, method):
    steps, checks = [], []

    def interrupt():
        checks.append(1)
        if len(checks) == 4:
            raise InterruptedError("stop")

    with pytest.raises(InterruptedError):
        run(model, inputs, 9, method=method, on_step=lambda *a: steps.append(a), check_interrupt=interrupt,
            **({} if method is generate else dict(window=4, overlap=1)))
    assert len(checks) == 4
    if method is generate:                                    # checked before every step
        assert len(steps) == 3
    else:                                                     # ... and before every window
        assert len(steps) <= 1


@pytest.mark.parametrize("handover", ["latent", "decode_encode"])
def test_clip_boundaries_continue_exactly(model, inputs, monkeypatch, handover):
    clips, conds, vae = [], [], []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: conds.append(k["cond_latent"]) or original(*a, **k))
    enc = lambda x: vae.append("encode") or encode(x)  # noqa: E731
    dec = lambda x: vae.append("decode") or decode(x)  # noqa: E731
    res = run(model, inputs, 9, handover=handover, encode=enc, decode=dec,
              on_clip=lambda c, lat: clips.append((c, lat.clone())))
    assert [c.index for c, _ in clips] == [0, 1, 2]
    for (prev, prev_lat), (nxt, nxt_lat) in zip(clips, clips[1:]):
        assert torch.equal(nxt_lat[0], prev_lat[-1])         # frame 0 of clip k+1 = last frame of clip k
    for clip, lat in clips:
        assert torch.equal(res.latents[list(clip.frames)], lat)   # the output is the clips, no seams
    cond_per_clip = conds[::2]                                # 2 steps per clip, cfg off
    assert torch.equal(cond_per_clip[0], inputs["ref_latent"])
    for k in (1, 2):
        last = res.latents[clips[k - 1][0].frames[-1]].unsqueeze(0)
        expected = last if handover == "latent" else encode(decode(last).clamp(0, 1))
        assert torch.allclose(cond_per_clip[k], expected, atol=1e-6)
    assert vae == ([] if handover == "latent" else ["decode", "encode"] * 2)
    assert len(res.handover_residuals) == 2 and all(r > 0 for r in res.handover_residuals)


def test_handovers_differ_and_need_vae(model, inputs):
    a = run(model, inputs, 6, handover="latent")
    b = run(model, inputs, 6, handover="decode_encode")
    assert torch.equal(a.latents[:4], b.latents[:4]) and not torch.allclose(a.latents[4:], b.latents[4:])
    with pytest.raises(ValueError, match="encode"):
        run(model, inputs, 6, handover="decode_encode", encode=None)
    run(model, inputs, 3, handover="decode_encode", encode=None, decode=None)   # one clip: no VAE needed


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpmpp_2m"])
@pytest.mark.parametrize("drops_reference", [False, True])
def test_cfg_batched_equals_sequential(model64, inputs, monkeypatch, drops_reference, sampler):
    """One batch-2 call per step (the unconditional half without the bank through ``reference_keep``)
    gives the latents of two batch-1 calls, for every sampler, dropping the bank in uncond or not."""
    model = model64
    kw = dict(num_frames=6, cfg_scale=3.0, uncond_drops_reference=drops_reference,
              scheduler=SchedulerOptions(name=sampler))
    calls = []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda x, *a, **k: calls.append(
        (x.shape[0], k["bank"] is not None, k.get("reference_keep"))) or original(x, *a, **k))
    batched = run(model, inputs, cfg_mode="batched", **kw)
    sequential = run(model, inputs, cfg_mode="sequential", **kw)
    torch.testing.assert_close(batched.latents, sequential.latents, atol=1e-5, rtol=0)
    assert batched.unet_frame_evals == sequential.unet_frame_evals
    assert batched.cfg_batched and not sequential.cfg_batched
    assert batched.unet_calls * 2 == sequential.unet_calls == 2 * 2 * 2     # 2 clips x 2 steps
    n = batched.unet_calls
    keep = (True, False) if drops_reference else None                     # bank once, uncond half off
    assert calls[:n] == [(2, True, keep)] * n
    assert calls[n:] == [(1, not drops_reference, None), (1, True, None)] * n   # uncond, then cond
    plain = run(model, inputs, num_frames=6, cfg_scale=1.0, scheduler=SchedulerOptions(name=sampler))
    assert not torch.allclose(plain.latents, sequential.latents, atol=1e-3)


def test_cfg_batched_needs_the_reference_switch(model64, inputs, monkeypatch):
    """Negative control: if the model ignored ``reference_keep`` (bank for the whole batch), batched
    CFG would NOT equal sequential CFG -- so the test above can fail."""
    model = model64
    kw = dict(num_frames=6, cfg_scale=3.0, uncond_drops_reference=True)
    sequential = run(model, inputs, cfg_mode="sequential", **kw)
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: original(*a, **{**k, "reference_keep": None}))
    ignored = run(model, inputs, cfg_mode="batched", **kw)
    assert ignored.cfg_batched and (ignored.latents - sequential.latents).abs().max() > 1e-3


@pytest.mark.parametrize("drops_reference", [False, True])
def test_cfg_batched_float32_close_to_sequential(model, inputs, drops_reference):
    kw = dict(num_frames=6, cfg_scale=3.0, uncond_drops_reference=drops_reference)
    batched = run(model, inputs, cfg_mode="batched", **kw)
    sequential = run(model, inputs, cfg_mode="sequential", **kw)
    assert batched.cfg_batched and batched.unet_calls * 2 == sequential.unet_calls
    torch.testing.assert_close(batched.latents, sequential.latents, atol=1e-4, rtol=0)


def test_zero_motion_scales_equal_no_maps(model, inputs):
    zero = run(model, inputs, 6, fg_scale=0.0, bg_scale=0.0)
    none = run(model, inputs, 6, pose_maps=None, track_maps=None)
    assert torch.equal(zero.latents, none.latents)
    with_maps = run(model, inputs, 6)
    assert not torch.allclose(with_maps.latents, none.latents, atol=1e-4)


def test_first_condition(model, inputs, monkeypatch):
    conds = []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: conds.append(k["cond_latent"]) or original(*a, **k))
    assert run(model, inputs, 3, steps=1, first_condition="blank").first_condition == "blank"
    assert run(model, inputs, 3, steps=1, first_condition="auto", pose_mismatch=0.5,
               mismatch_threshold=0.2).first_condition == "blank"
    assert run(model, inputs, 3, steps=1, first_condition="auto", pose_mismatch=0.1,
               mismatch_threshold=0.2).first_condition == "reference"
    assert conds[0] is None and conds[1] is None and torch.equal(conds[2], inputs["ref_latent"])
    with pytest.raises(ValueError, match="pose_mismatch"):
        run(model, inputs, 3, first_condition="auto")


def test_denoise_from_init_latents(model, inputs):
    init = torch.randn(6, 4, H, W, generator=torch.Generator().manual_seed(9))
    full = run(model, inputs, 6, steps=4, init_latents=init)
    part = run(model, inputs, 6, steps=4, denoise=0.5, init_latents=init)
    assert (full.steps, part.steps) == (4, 2) and part.unet_calls == full.unet_calls // 2
    assert (part.latents - init).abs().mean() < (full.latents - init).abs().mean()
    with pytest.raises(ValueError, match="init_latents"):
        run(model, inputs, 6, denoise=0.5)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_other_samplers(model, inputs, sampler):
    res = run(model, inputs, 6, scheduler=SchedulerOptions(name=sampler))
    assert res.latents.shape == (6, 4, H, W) and torch.isfinite(res.latents).all()


def test_sliding_window_baseline(model, inputs):
    res = run(model, inputs, 9, method=sliding_window_generate, window=4, overlap=2, cfg_scale=2.0,
              cfg_mode="batched")
    assert res.method == "sliding_window" and res.plan == ((0, 1, 2, 3), (2, 3, 4, 5), (4, 5, 6, 7), (5, 6, 7, 8))
    assert res.latents.shape == (9, 4, H, W) and torch.isfinite(res.latents).all()
    assert res.unet_calls == 2 * 4 and res.unet_frame_evals == 2 * 16 * 2 and res.reference_runs == 1  # CFG batched
    again = run(model, inputs, 9, method=sliding_window_generate, window=4, overlap=2, cfg_scale=2.0,
                cfg_mode="batched")
    assert torch.equal(res.latents, again.latents)


@pytest.mark.parametrize("kwargs, name", [
    (dict(clip_length=33), "clip_length"), (dict(clip_length=1), "clip_length"), (dict(steps=0), "steps"),
    (dict(seed=-1), "seed"), (dict(denoise=0.0), "denoise"), (dict(cfg_scale=-1.0), "cfg_scale"),
    (dict(cfg_mode="parallel"), "cfg_mode"), (dict(handover="copy"), "handover"),
    (dict(first_condition="none"), "first_condition"), (dict(fg_scale=-1.0), "fg_scale"),
    (dict(scheduler="ddim"), "scheduler"),
])
def test_bad_options(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GenerationOptions(**kwargs)


def test_bad_inputs(model, inputs):
    with pytest.raises(ValueError, match="pose_maps"):
        run(model, inputs, 6, pose_maps=inputs["pose_maps"][:5])
    with pytest.raises(ValueError, match="track_maps"):
        run(model, inputs, 6, track_maps=inputs["track_maps"][:6, :1])
    with pytest.raises(ValueError, match="ref_latent"):
        run(model, inputs, 6, ref_latent=torch.zeros(4, H, W))
    with pytest.raises(ValueError, match="clip_embeds"):
        run(model, inputs, 6, clip_embeds=torch.zeros(1, 1, 768))
    with pytest.raises(ValueError, match="num_frames"):
        run(model, inputs, 0)
    short = MovingBGModel(MovingBGConfig.tiny(motion={"max_seq_length": 8}))
    with pytest.raises(ValueError, match="clip_length=12 exceeds"):
        run(short, inputs, 12, clip_length=12)
    with pytest.raises(ValueError, match="window=12 exceeds"):
        run(short, inputs, 12, method=sliding_window_generate, window=12, overlap=2)
