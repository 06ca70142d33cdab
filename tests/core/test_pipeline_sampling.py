"""Samplers: scheduler factory, denoise strength, CFG helper, and the loop with an oracle denoiser."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from movingbg.pipelines.sampling import (SchedulerOptions, cfg_combine, guided_prediction, initial_latents,
                                         make_scheduler, merge_branches, run_sampler, sampling_timesteps)

SAMPLER_CLASSES = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler,
                   "dpmpp_2m": DPMSolverMultistepScheduler}


@pytest.mark.parametrize("name", list(SAMPLER_CLASSES))
def test_v_prediction_zero_snr_trailing_builds(name):
    sched = make_scheduler(name, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                           timestep_spacing="trailing", beta_schedule="linear")
    assert isinstance(sched, SAMPLER_CLASSES[name])
    cfg = sched.config
    assert (cfg.prediction_type, cfg.rescale_betas_zero_snr, cfg.timestep_spacing) == ("v_prediction", True, "trailing")
    assert (cfg.beta_start, cfg.beta_end, cfg.beta_schedule, cfg.num_train_timesteps) == (0.00085, 0.012, "linear", 1000)
    assert float(sched.alphas_cumprod[-1]) < 1e-6         # zero terminal SNR (2**-24 for Euler / DPM++)
    sched.set_timesteps(30)
    assert int(sched.timesteps[0]) == 999                  # trailing spacing starts at the last timestep
    assert len(sched.timesteps) == 30


@pytest.mark.parametrize("spacing", ["leading", "linspace"])
@pytest.mark.parametrize("schedule", ["scaled_linear", "linear"])
def test_epsilon_configs_build(spacing, schedule):
    for name in SAMPLER_CLASSES:
        sched = make_scheduler(name, prediction_type="epsilon", rescale_betas_zero_snr=False,
                               timestep_spacing=spacing, beta_schedule=schedule)
        sched.set_timesteps(10)
        assert len(sched.timesteps) == 10 and sched.config.beta_schedule == schedule


@pytest.mark.parametrize("kwargs, name", [
    (dict(name="heun"), "sampler name"),
    (dict(prediction_type="sample", rescale_betas_zero_snr=False), "prediction_type"),
    (dict(timestep_spacing="karras"), "timestep_spacing"),
    (dict(beta_schedule="cosine"), "beta_schedule"),
    (dict(prediction_type="epsilon", rescale_betas_zero_snr=True), "rescale_betas_zero_snr"),
    (dict(beta_start=0.02, beta_end=0.01), "beta_start"),
    (dict(num_train_timesteps=1), "num_train_timesteps"),
])
def test_bad_scheduler_options(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SchedulerOptions(**kwargs)
    sampler = kwargs.pop("name", "ddim")
    with pytest.raises(ValueError, match=name):
        make_scheduler(sampler, **kwargs)


def test_denoise_runs_fewer_steps():
    for name in SAMPLER_CLASSES:
        sched = make_scheduler(name)
        full = sampling_timesteps(sched, 20, 1.0)
        part = sampling_timesteps(sched, 20, 0.5)
        assert len(full) == 20 and len(part) == 10
        assert torch.equal(part, full[10:])                # the LAST (least noisy) timesteps
        assert len(sampling_timesteps(sched, 20, 0.01)) == 1
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="denoise"):
            sampling_timesteps(make_scheduler(), 10, bad)
    with pytest.raises(ValueError, match="steps"):
        sampling_timesteps(make_scheduler(), 0)


def _oracle(scheduler, target: torch.Tensor):
    """Exact v / epsilon prediction for data = ``target`` (a perfect denoiser)."""
    ac = scheduler.alphas_cumprod

    def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = ac[int(round(float(t)))]
        a, s = abar.sqrt(), (1 - abar).sqrt()
        eps = (x - a * target) / s
        if scheduler.config.prediction_type == "epsilon":
            return eps
        return a * eps - s * target

    return predict


@pytest.mark.parametrize("name", list(SAMPLER_CLASSES))
@pytest.mark.parametrize("zero_snr", [True, False])
def test_loop_with_oracle_recovers_data(name, zero_snr):
    """The whole loop (noise level, scale_model_input, step, img2img add_noise) is consistent."""
    target = torch.linspace(-1, 1, 2 * 4 * 3 * 2 * 2).reshape(2, 4, 3, 2, 2)
    opts = SchedulerOptions(name, "v_prediction" if zero_snr else "epsilon", zero_snr, "trailing")
    for denoise, init in ((1.0, None), (0.4, target + 0.3)):
        sched = opts.build()
        timesteps = sampling_timesteps(sched, 8, denoise)
        noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
        latents = initial_latents(sched, timesteps, noise, init)
        calls = []
        out = run_sampler(sched, timesteps, latents, _oracle(sched, target),
                          on_step=lambda i, n: calls.append((i, n)))
        assert calls == [(i, len(timesteps)) for i in range(len(timesteps))]
        assert torch.allclose(out, target, atol=1e-3), (name, zero_snr, denoise, (out - target).abs().max())


def test_run_sampler_interrupt_stops_before_the_next_step():
    sched = make_scheduler("ddim")
    timesteps = sampling_timesteps(sched, 10)
    evaluated = []

    def interrupt():
        if len(evaluated) == 3:
            raise KeyboardInterrupt

    def predict(x, t):
        evaluated.append(int(t))
        return torch.zeros_like(x)

    with pytest.raises(KeyboardInterrupt):
        run_sampler(sched, timesteps, torch.randn(1, 4, 2, 2, 2), predict, check_interrupt=interrupt)
    assert len(evaluated) == 3


def test_cfg_batched_equals_sequential():
    weight = torch.randn(4, 4)
    calls = []

    def model_fn(x, t, *, emb, scale, shared):
        calls.append(x.shape[0])
        return torch.einsum("bc...,cd->bd...", x, weight) * scale + emb[:, :, None] + shared

    x = torch.randn(1, 4, 3)
    cond = dict(emb=torch.randn(1, 4), scale=2.0, shared=1.5)
    uncond = dict(emb=torch.zeros(1, 4), scale=2.0, shared=1.5)
    batched = guided_prediction(model_fn, x, 10, cond, uncond, 3.5, "batched")
    sequential = guided_prediction(model_fn, x, 10, cond, uncond, 3.5, "sequential")
    assert calls == [2, 1, 1]
    assert (batched.calls, batched.branches, sequential.calls, sequential.branches) == (1, 2, 2, 2)
    assert torch.allclose(batched.prediction, sequential.prediction, atol=1e-5)
    expected = cfg_combine(model_fn(x, 10, **cond), model_fn(x, 10, **uncond), 3.5)
    assert torch.allclose(sequential.prediction, expected, atol=1e-6)
    single = guided_prediction(model_fn, x, 10, cond, uncond, 1.0)
    assert (single.calls, single.branches) == (1, 1)
    with pytest.raises(ValueError, match="cfg_mode"):
        guided_prediction(model_fn, x, 10, cond, uncond, 2.0, "parallel")


def test_merge_branches_rules():
    a, b = torch.ones(1, 2), torch.zeros(1, 2)
    shared = object()
    merged = merge_branches(dict(x=a, y=None, s=1.0, o=shared), dict(x=b, y=None, s=1.0, o=shared))
    assert merged["x"].shape == (2, 2) and merged["y"] is None and merged["o"] is shared
    assert merge_branches(dict(bank=shared), dict(bank=None)) is None      # bank only in cond: no batching
    assert merge_branches(dict(x=a), dict(x=None)) is None
    assert merge_branches(dict(x=a), dict(x=torch.zeros(2, 2))) is None
    assert merge_branches(dict(s=1.0), dict(s=2.0)) is None
    assert merge_branches(dict(s=1.0), dict(t=1.0)) is None


def test_guided_prediction_custom_merge():
    """A model-specific ``merge`` lets branches that ``merge_branches`` cannot stack share one call."""
    calls = []

    def model_fn(x, t, *, extra=None, keep=None):
        calls.append((x.shape[0], keep))
        add = torch.zeros(x.shape[0]) if extra is None else extra * torch.tensor(keep if keep else [1.0] * x.shape[0])
        return x + add.view(-1, 1)

    def merge(cond, uncond, batch):
        assert batch == 1 and uncond["extra"] is None
        return dict(extra=cond["extra"], keep=[1.0] * batch + [0.0] * batch)

    x = torch.randn(1, 3)
    cond, uncond = dict(extra=torch.tensor(2.0)), dict(extra=None)
    assert merge_branches(cond, uncond) is None
    batched = guided_prediction(model_fn, x, 5, cond, uncond, 3.0, "batched", merge=merge)
    sequential = guided_prediction(model_fn, x, 5, cond, uncond, 3.0, "sequential", merge=merge)
    assert calls == [(2, [1.0, 0.0]), (1, None), (1, None)] and batched.calls == 1 and sequential.calls == 2
    torch.testing.assert_close(batched.prediction, sequential.prediction, atol=0, rtol=0)
    fallback = guided_prediction(model_fn, x, 5, cond, uncond, 3.0, "batched", merge=lambda c, u, b: None)
    assert fallback.calls == 2 and torch.equal(fallback.prediction, sequential.prediction)
