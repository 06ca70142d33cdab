"""Samplers: scheduler factory, denoise strength, classifier-free guidance, the step loop.

Only diffusers' public scheduler API is used (``set_timesteps``, ``timesteps``, ``order``,
``init_noise_sigma``, ``scale_model_input``, ``step``, ``add_noise``, ``set_begin_index``), so the
same code drives ``DDIMScheduler``, ``EulerDiscreteScheduler`` and ``DPMSolverMultistepScheduler``.

Defaults follow Moore-AnimateAnyone's inference: DDIM, v-prediction, zero-terminal-SNR rescale,
trailing timestep spacing, betas 0.00085..0.012 ``linear``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

logger = logging.getLogger(__name__)

__all__ = [
    "SAMPLERS",
    "SchedulerOptions",
    "make_scheduler",
    "sampling_timesteps",
    "initial_latents",
    "cfg_combine",
    "merge_branches",
    "GuidedPrediction",
    "guided_prediction",
    "run_sampler",
]

SamplerName = Literal["ddim", "euler", "dpmpp_2m"]
SAMPLERS: tuple[str, ...] = ("ddim", "euler", "dpmpp_2m")
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction")
TIMESTEP_SPACINGS: tuple[str, ...] = ("leading", "trailing", "linspace")
BETA_SCHEDULES: tuple[str, ...] = ("scaled_linear", "linear")
CFG_MODES: tuple[str, ...] = ("batched", "sequential")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class SchedulerOptions:
    """Which diffusers scheduler to sample with, and its noise schedule.

    Attributes:
        name: ``"ddim"`` (DDIMScheduler, eta 0), ``"euler"`` (EulerDiscreteScheduler) or
            ``"dpmpp_2m"`` (DPMSolverMultistepScheduler, dpmsolver++, order 2).
        prediction_type: what the U-Net predicts, ``"epsilon"`` or ``"v_prediction"``.
        rescale_betas_zero_snr: rescale betas to zero terminal SNR (needs ``v_prediction``).
        timestep_spacing: ``"leading"``, ``"trailing"`` or ``"linspace"``.
        beta_start, beta_end, beta_schedule: training noise schedule (``"scaled_linear"`` = SD1.5,
            ``"linear"`` = Moore-AnimateAnyone).
        num_train_timesteps: training timesteps (1000).
    """

    name: SamplerName = "ddim"
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction"
    rescale_betas_zero_snr: bool = True
    timestep_spacing: Literal["leading", "trailing", "linspace"] = "trailing"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: Literal["scaled_linear", "linear"] = "linear"
    num_train_timesteps: int = 1000

    def __post_init__(self) -> None:
        _choice("sampler name", self.name, SAMPLERS)
        _choice("prediction_type", self.prediction_type, PREDICTION_TYPES)
        _choice("timestep_spacing", self.timestep_spacing, TIMESTEP_SPACINGS)
        _choice("beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        if isinstance(self.num_train_timesteps, bool) or not isinstance(self.num_train_timesteps, int) \
                or self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be an int >= 2, got {self.num_train_timesteps!r}")
        if not 0.0 < float(self.beta_start) < float(self.beta_end) < 1.0:
            raise ValueError(f"beta_start / beta_end must satisfy 0 < beta_start < beta_end < 1, "
                             f"got {self.beta_start} / {self.beta_end}")
        if self.rescale_betas_zero_snr and self.prediction_type != "v_prediction":
            raise ValueError("rescale_betas_zero_snr=True needs prediction_type='v_prediction' "
                             "(an epsilon model cannot denoise at zero SNR)")

    def build(self) -> SchedulerMixin:
        """A fresh scheduler (schedulers are stateful: use one per clip / video)."""
        return make_scheduler(
            self.name, prediction_type=self.prediction_type,
            rescale_betas_zero_snr=self.rescale_betas_zero_snr, timestep_spacing=self.timestep_spacing,
            beta_start=self.beta_start, beta_end=self.beta_end, beta_schedule=self.beta_schedule,
            num_train_timesteps=self.num_train_timesteps)


def make_scheduler(
    name: SamplerName = "ddim",
    *,
    prediction_type: Literal["epsilon", "v_prediction"] = "v_prediction",
    rescale_betas_zero_snr: bool = True,
    timestep_spacing: Literal["leading", "trailing", "linspace"] = "trailing",
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    beta_schedule: Literal["scaled_linear", "linear"] = "linear",
    num_train_timesteps: int = 1000,
) -> SchedulerMixin:
    """Build a diffusers scheduler by name.

    ``steps_offset=1`` (the SD1.5 convention, only used by ``"leading"`` spacing); DDIM with
    ``clip_sample=False`` and eta 0; DPM++ 2M = ``DPMSolverMultistepScheduler(algorithm_type=
    "dpmsolver++", solver_order=2)``. Zero-SNR rescale is done by diffusers itself
    (DDIM: terminal alpha_bar = 0; Euler / DPM++: 2**-24 so that sigma_max stays finite).

    Raises:
        ValueError: naming the bad argument (see :class:`SchedulerOptions`).
    """
    opts = SchedulerOptions(name, prediction_type, rescale_betas_zero_snr, timestep_spacing,
                            beta_start, beta_end, beta_schedule, num_train_timesteps)
    common = dict(num_train_timesteps=opts.num_train_timesteps, beta_start=float(opts.beta_start),
                  beta_end=float(opts.beta_end), beta_schedule=opts.beta_schedule,
                  prediction_type=opts.prediction_type, timestep_spacing=opts.timestep_spacing,
                  rescale_betas_zero_snr=bool(opts.rescale_betas_zero_snr), steps_offset=1)
    if opts.name == "ddim":
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **common)
    if opts.name == "euler":
        return EulerDiscreteScheduler(**common)
    return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **common)


def sampling_timesteps(scheduler: SchedulerMixin, steps: int, denoise: float = 1.0,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Set ``steps`` timesteps and return the ones to run for denoise strength ``denoise``.

    Like diffusers' img2img ``strength``: ``round(steps * denoise)`` (at least 1) of the LAST
    timesteps are run; the scheduler's begin index is set to the first of them (for schedulers that
    have ``set_begin_index``) so ``add_noise`` / ``step`` use the right noise level.

    Returns:
        ``(n,)`` timesteps, ``n <= steps``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not 0.0 < float(denoise) <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise!r}")
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    run = min(steps, max(1, int(round(steps * float(denoise)))))
    start = max(len(timesteps) - run * scheduler.order, 0)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return timesteps[start:]


def initial_latents(scheduler: SchedulerMixin, timesteps: torch.Tensor, noise: torch.Tensor,
                    init: torch.Tensor | None = None) -> torch.Tensor:
    """Starting latents of the sampling loop.

    Args:
        timesteps: from :func:`sampling_timesteps` (its first entry is the starting noise level).
        noise: standard normal, any shape, e.g. ``(1, 4, F, h, w)``.
        init: same shape as ``noise`` (model-space latents to start from, img2img) or None.

    Returns:
        ``noise * init_noise_sigma`` without ``init``; ``add_noise(init, noise, timesteps[0])`` with it.
    """
    if init is None:
        return noise * scheduler.init_noise_sigma
    if init.shape != noise.shape:
        raise ValueError(f"init latents must be {tuple(noise.shape)}, got {tuple(init.shape)}")
    return scheduler.add_noise(init.to(noise), noise, timesteps[:1])


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)``."""
    return uncond + scale * (cond - uncond)


def merge_branches(cond: Mapping[str, Any], uncond: Mapping[str, Any]) -> dict[str, Any] | None:
    """Keyword arguments of ONE batched call computing both CFG branches, or None if impossible.

    Tensors of equal shape are concatenated along dim 0 (``[cond ; uncond]``); None stays None;
    any other value (floats, a batch-1 ``ReferenceBank``) must be the same object / equal in both
    branches and is passed once (it must broadcast over the doubled batch). A tensor in one branch
    and None / something else in the other (e.g. a bank only in the conditional branch) cannot be
    merged by this generic rule; a model-specific ``merge`` for :func:`guided_prediction` can (the
    progressive pipeline merges a conditional-only bank with a per-item switch).
    """
    if set(cond) != set(uncond):
        return None
    merged: dict[str, Any] = {}
    for key, a in cond.items():
        b = uncond[key]
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            if a.shape != b.shape:
                return None
            merged[key] = torch.cat([a, b])
        elif isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            return None
        elif a is b or (isinstance(a, (int, float, str)) and a == b):
            merged[key] = a
        else:
            return None
    return merged


@dataclass(frozen=True, eq=False)
class GuidedPrediction:
    """Output of :func:`guided_prediction`.

    Attributes:
        prediction: guided prediction, shape of the sample.
        calls: model calls made (1 batched / unguided, 2 sequential).
        branches: samples evaluated per frame (2 with guidance, 1 without).
    """

    prediction: torch.Tensor
    calls: int
    branches: int


def guided_prediction(
    model_fn: Callable[..., torch.Tensor],
    sample: torch.Tensor,
    timestep: torch.Tensor,
    cond: Mapping[str, Any],
    uncond: Mapping[str, Any] | None,
    scale: float,
    mode: Literal["batched", "sequential"] = "batched",
    merge: Callable[[Mapping[str, Any], Mapping[str, Any], int], dict[str, Any] | None] | None = None,
) -> GuidedPrediction:
    """``model_fn(sample, timestep, **kwargs)`` with classifier-free guidance.

    Args:
        model_fn: the denoiser, ``(B, ...) -> (B, ...)``.
        sample: ``(B, ...)`` model input (already ``scale_model_input``-ed).
        cond, uncond: keyword arguments of the conditional / unconditional branch; ``uncond=None``
            or ``scale == 1`` runs the conditional branch only.
        mode: ``"batched"``: one call with the branches stacked (``2B``: conditional first) when
            ``merge`` can merge them, else two calls; ``"sequential"``: always two calls of batch
            ``B`` (about half the peak activation memory).
        merge: ``merge(cond, uncond, B)`` -> keyword arguments of the one batched call, or None when
            the branches cannot share a call; default :func:`merge_branches`.

    Returns:
        :class:`GuidedPrediction`.
    """
    _choice("cfg_mode", mode, CFG_MODES)
    if uncond is None or float(scale) == 1.0:
        return GuidedPrediction(model_fn(sample, timestep, **cond), 1, 1)
    merged = None
    if mode == "batched":
        merged = merge(cond, uncond, sample.shape[0]) if merge is not None else merge_branches(cond, uncond)
    if merged is not None:
        pred_cond, pred_uncond = model_fn(torch.cat([sample, sample]), timestep, **merged).chunk(2)
        return GuidedPrediction(cfg_combine(pred_cond, pred_uncond, scale), 1, 2)
    pred_uncond = model_fn(sample, timestep, **uncond)
    pred_cond = model_fn(sample, timestep, **cond)
    return GuidedPrediction(cfg_combine(pred_cond, pred_uncond, scale), 2, 2)


def run_sampler(
    scheduler: SchedulerMixin,
    timesteps: torch.Tensor,
    latents: torch.Tensor,
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    generator: torch.Generator | None = None,
    on_step: Callable[[int, int], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
) -> torch.Tensor:
    """The denoising loop.

    For every timestep: ``check_interrupt()`` (may raise to stop), ``scale_model_input``,
    ``predict(model_input, t)`` (the guided model output, same shape as ``latents``),
    ``scheduler.step``, then ``on_step(i, len(timesteps))``.

    Args:
        latents: starting latents (from :func:`initial_latents`), float32 recommended.

    Returns:
        the denoised latents, same shape / dtype as ``latents``.
    """
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        if check_interrupt is not None:
            check_interrupt()
        model_input = scheduler.scale_model_input(latents, t)
        pred = predict(model_input, t).to(latents.dtype)
        latents = scheduler.step(pred, t, latents, generator=generator, return_dict=False)[0]
        if on_step is not None:
            on_step(i, total)
    return latents
