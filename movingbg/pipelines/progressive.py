"""Progressive long-video generation (the paper, section 2.2) and the sliding-window baseline.

Stages of :func:`generate`:

1. **prepare** -- validate inputs, plan the clips (:func:`~.planner.plan_progressive`), choose the
   first condition (reference latent, or blank = no condition when the first driving pose does not
   match the reference).
2. **encode the reference once** -- the reference U-Net runs exactly once per video; its bank is
   reused by every clip and every sampling step.
3. **denoise one clip** -- fresh scheduler, per-clip CPU noise generator, classifier-free guidance;
   the clip's latents leave the device as soon as it is done (kept on CPU).
4. **hand over** -- the clip's last frame becomes the next clip's condition latent, either by VAE
   ``decode -> encode`` (as the paper: the condition is an image) or by reusing the latent.
5. **assemble** -- each clip writes only its ``emit`` frames into the ``(T, 4, h, w)`` CPU output.

Continuity at a clip boundary (exactly what happens): clip ``k + 1`` is sampled with the previous
clip's last frame as condition in its frame-0 slot. After sampling, the clip's own frame 0 (the
model's reproduction of the condition) is NOT emitted: it is replaced by the previous clip's last
latent exactly as that was emitted, so the output has that frame once, no duplicate, and clip ``k + 1``
continues from it. The mean absolute difference between the sampled frame 0 and the condition latent
is reported per boundary (``GenerationResult.handover_residuals``) as a drift / seam indicator.

All latents are in MODEL space (already multiplied by the VAE scale factor): the caller's ``encode``
/ ``decode`` callables do the scaling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

import torch

from ..models.generator import MovingBGModel
from ..models.reference import ReferenceBank
from .planner import MAX_CLIP_LENGTH, ClipPlan, average_windows, plan_progressive, plan_sliding_window
from .sampling import (CFG_MODES, SchedulerOptions, guided_prediction, initial_latents, merge_branches,
                       run_sampler, sampling_timesteps)

logger = logging.getLogger(__name__)

__all__ = [
    "GenerationOptions",
    "GenerationResult",
    "generate",
    "sliding_window_generate",
    "clip_seed",
]

EncodeFn = Callable[[torch.Tensor], torch.Tensor]
DecodeFn = Callable[[torch.Tensor], torch.Tensor]
StepFn = Callable[[int, int, int], None]
ClipFn = Callable[[ClipPlan, torch.Tensor], None]

_HANDOVERS = ("decode_encode", "latent")
_FIRST_CONDITIONS = ("reference", "blank", "auto")
_SEED_MOD = 2 ** 64
_SEED_STRIDE = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio): distinct seeds per clip


def clip_seed(seed: int, clip_index: int) -> int:
    """Seed of clip ``clip_index``'s noise: ``seed`` for clip 0, then ``seed + k * 0x9E37...`` mod 2**64."""
    return (int(seed) + int(clip_index) * _SEED_STRIDE) % _SEED_MOD


@dataclass(frozen=True)
class GenerationOptions:
    """Sampling options of one video (frozen; build a new one to change anything).

    Attributes:
        steps: sampling steps per clip (before ``denoise``).
        cfg_scale: classifier-free guidance scale; 1 = no unconditional branch.
        seed: 0 .. 2**64 - 1; same seed -> identical output (CPU noise generator).
        clip_length: frames per clip, 2..32 (the paper: up to 32); also the sliding window size.
        scheduler: sampler name and noise schedule (:class:`~.sampling.SchedulerOptions`).
        denoise: strength in (0, 1]; < 1 needs ``init_latents`` and runs ``round(steps * denoise)``
            steps from a partially noised init (img2img).
        fg_scale, bg_scale: weights of the pose / track features (0 = ignore those maps).
        cfg_mode: ``"batched"`` (one U-Net call of batch 2 for both branches; with
            ``uncond_drops_reference`` the unconditional half attends without the bank through the
            model's per-sample ``reference_keep`` switch, same result as sequential) or
            ``"sequential"`` (two calls of batch 1, about half the peak activation memory; the default).
        handover: ``"decode_encode"`` (condition of clip k+1 = encode(decode(last latent of clip
            k)), as the paper) or ``"latent"`` (reuse the latent: no VAE round trip, no colour drift
            from it).
        first_condition: condition of clip 0: ``"reference"`` (the reference latent), ``"blank"``
            (no condition: zero latent, marker off; the paper's blank image for a first pose that does
            not match the reference) or ``"auto"`` (blank when ``pose_mismatch > mismatch_threshold``).
        mismatch_threshold: threshold for ``"auto"``, in the unit of the caller's ``pose_mismatch``.
        uncond_drops_reference: the CFG unconditional branch has no reference bank and a zero CLIP
            embedding (Moore-AnimateAnyone); False keeps the bank there (CLIP still zero).
    """

    steps: int = 30
    cfg_scale: float = 3.5
    seed: int = 0
    clip_length: int = 24
    scheduler: SchedulerOptions = field(default_factory=SchedulerOptions)
    denoise: float = 1.0
    fg_scale: float = 1.0
    bg_scale: float = 1.0
    cfg_mode: Literal["batched", "sequential"] = "sequential"
    handover: Literal["decode_encode", "latent"] = "decode_encode"
    first_condition: Literal["reference", "blank", "auto"] = "reference"
    mismatch_threshold: float = 0.1
    uncond_drops_reference: bool = True

    def __post_init__(self) -> None:
        _int_in("steps", self.steps, 1, 10_000)
        _int_in("seed", self.seed, 0, _SEED_MOD - 1)
        _int_in("clip_length", self.clip_length, 2, MAX_CLIP_LENGTH)
        if not isinstance(self.scheduler, SchedulerOptions):
            raise ValueError(f"scheduler must be a SchedulerOptions, got {type(self.scheduler).__name__}")
        if not float(self.cfg_scale) >= 0.0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale!r}")
        if not 0.0 < float(self.denoise) <= 1.0:
            raise ValueError(f"denoise must be in (0, 1], got {self.denoise!r}")
        for name in ("fg_scale", "bg_scale", "mismatch_threshold"):
            if not float(getattr(self, name)) >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name, allowed in (("cfg_mode", CFG_MODES), ("handover", _HANDOVERS),
                              ("first_condition", _FIRST_CONDITIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


def _int_in(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in {low}..{high}, got {value!r}")


@dataclass(frozen=True, eq=False)
class GenerationResult:
    """Latents of a generated video plus diagnostics.

    Attributes:
        latents: ``(T, 4, h, w)`` float32 on CPU, model space (decode with the caller's VAE).
        method: ``"progressive"`` or ``"sliding_window"``.
        plan: the clips (:class:`~.planner.ClipPlan`) or windows (tuples of frame indices).
        steps: sampling steps run per clip / per video (after ``denoise``).
        unet_calls: denoising U-Net forward calls.
        unet_frame_evals: frames pushed through the denoising U-Net (calls x batch x frames).
        reference_runs: reference U-Net runs (1 per video with a reference U-Net, else 0).
        first_condition: condition actually used for the first clip: ``"reference"`` or ``"blank"``.
        cfg_batched: True when the guidance branches shared U-Net calls.
        handover_residuals: per clip boundary, mean ``|sampled frame 0 - condition latent|``.
    """

    latents: torch.Tensor
    method: str
    plan: tuple
    steps: int
    unet_calls: int
    unet_frame_evals: int
    reference_runs: int
    first_condition: str
    cfg_batched: bool
    handover_residuals: tuple[float, ...] = ()

    @property
    def num_frames(self) -> int:
        return int(self.latents.shape[0])


@dataclass
class _Counters:
    unet_calls: int = 0
    unet_frame_evals: int = 0
    reference_runs: int = 0
    cfg_batched: bool = False


@dataclass(frozen=True, eq=False)
class _Video:
    """Everything a clip needs, prepared once per video (stage 1 + 2)."""

    model: MovingBGModel
    options: GenerationOptions
    num_frames: int
    latent_hw: tuple[int, int]
    device: torch.device
    dtype: torch.dtype
    clip_embeds: torch.Tensor          # (1, 1, D) on device; zeros when the caller gave None
    first_cond: torch.Tensor | None    # (1, 4, h, w) on device, or None (blank / no concat)
    first_condition: str
    bank: ReferenceBank | None
    pose_maps: torch.Tensor | None     # (T, 3, H, W), caller's device
    track_maps: torch.Tensor | None
    init_latents: torch.Tensor | None  # (T, 4, h, w) on CPU
    on_step: StepFn | None
    check_interrupt: Callable[[], None] | None
    counters: _Counters


# ---- stage 1: prepare ------------------------------------------------------------------------------
def _check_frames_tensor(name: str, value: torch.Tensor | None, num_frames: int, channels: int) -> None:
    if value is None:
        return
    if not isinstance(value, torch.Tensor) or value.ndim != 4 or value.shape[0] != num_frames \
            or value.shape[1] != channels:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} must be ({num_frames}, {channels}, H, W) (one per frame), got {shape}")


def _check_clip_length(model: MovingBGModel, name: str, length: int) -> None:
    """Clips longer than the motion modules' position encoding cannot be sampled."""
    limit = model.config.motion.max_seq_length
    if length > limit:
        raise ValueError(f"{name}={length} exceeds this model's motion-module maximum of {limit} frames")


def _resolve_first_condition(options: GenerationOptions, pose_mismatch: float | None) -> str:
    """``"reference"`` or ``"blank"``; ``"auto"`` compares ``pose_mismatch`` to the threshold."""
    if options.first_condition != "auto":
        return options.first_condition
    if pose_mismatch is None:
        raise ValueError("pose_mismatch is required when first_condition='auto'")
    blank = float(pose_mismatch) > options.mismatch_threshold
    logger.info("first pose mismatch %.4f vs threshold %.4f: first clip conditioned on %s",
                float(pose_mismatch), options.mismatch_threshold, "a blank" if blank else "the reference")
    return "blank" if blank else "reference"


def _check_inputs(model: MovingBGModel, ref_latent: torch.Tensor, num_frames: int, options: GenerationOptions,
                  pose_maps: torch.Tensor | None, track_maps: torch.Tensor | None,
                  init_latents: torch.Tensor | None) -> tuple[int, int]:
    """Validate shapes; returns the latent ``(h, w)``."""
    if not isinstance(options, GenerationOptions):
        raise ValueError(f"options must be GenerationOptions, got {type(options).__name__}")
    _int_in("num_frames", num_frames, 1, 10 ** 9)
    c = model.config.latent_channels
    if not isinstance(ref_latent, torch.Tensor) or ref_latent.ndim != 4 or ref_latent.shape[:2] != (1, c):
        shape = tuple(ref_latent.shape) if isinstance(ref_latent, torch.Tensor) else type(ref_latent).__name__
        raise ValueError(f"ref_latent must be (1, {c}, h, w), got {shape}")
    _check_frames_tensor("pose_maps", pose_maps, num_frames, model.config.encoder_in_channels)
    _check_frames_tensor("track_maps", track_maps, num_frames, model.config.encoder_in_channels)
    _check_frames_tensor("init_latents", init_latents, num_frames, c)
    h, w = ref_latent.shape[-2:]
    if init_latents is not None and tuple(init_latents.shape[-2:]) != (h, w):
        raise ValueError(f"init_latents must be ({num_frames}, {c}, {h}, {w}), got {tuple(init_latents.shape)}")
    if options.denoise < 1.0 and init_latents is None:
        raise ValueError(f"denoise={options.denoise} < 1 needs init_latents (T, {c}, h, w) to start from")
    return int(h), int(w)


def _prepare(model: MovingBGModel, ref_latent: torch.Tensor, clip_embeds: torch.Tensor | None,
             num_frames: int, options: GenerationOptions, maps: tuple[torch.Tensor | None, torch.Tensor | None],
             init_latents: torch.Tensor | None, callbacks: tuple[StepFn | None, Callable[[], None] | None],
             device: torch.device | str | None, dtype: torch.dtype | None,
             pose_mismatch: float | None) -> _Video:
    """Stage 1 + 2: validate, choose the first condition, encode the reference (once)."""
    hw = _check_inputs(model, ref_latent, num_frames, options, maps[0], maps[1], init_latents)
    device = torch.device(device) if device is not None else model.device
    dtype = dtype or model.dtype
    first = _resolve_first_condition(options, pose_mismatch)
    if not model.config.use_concat:
        logger.info("model has no condition concatenation: clips are not conditioned on each other")
    cond = ref_latent.to(device, dtype) if first == "reference" and model.config.use_concat else None
    dim = model.config.cross_attention_dim
    if clip_embeds is not None and (clip_embeds.numel() != dim or clip_embeds.ndim not in (2, 3)):
        raise ValueError(f"clip_embeds must be (1, 1, {dim}), got {tuple(clip_embeds.shape)}")
    clip = clip_embeds.reshape(1, 1, dim) if clip_embeds is not None else torch.zeros(1, 1, dim)
    counters = _Counters()
    bank = _encode_reference(model, ref_latent.to(device, dtype), clip.to(device, dtype), counters)
    init = init_latents.detach().to("cpu", torch.float32) if init_latents is not None else None
    return _Video(model, options, num_frames, hw, device, dtype, clip.to(device, dtype), cond, first, bank,
                  maps[0], maps[1], init, callbacks[0], callbacks[1], counters)


# ---- stage 2: reference ----------------------------------------------------------------------------
def _encode_reference(model: MovingBGModel, ref_latent: torch.Tensor, clip_embeds: torch.Tensor,
                      counters: _Counters) -> ReferenceBank | None:
    """Run the reference U-Net once; None when the model has none (ablation)."""
    if model.reference_unet is None:
        return None
    with torch.no_grad():
        bank = model.encode_reference(ref_latent, clip_embeds).detach()
    counters.reference_runs += 1
    logger.debug("reference bank: %d entries, %.1f MiB", len(bank), bank.nbytes() / 2 ** 20)
    return bank


# ---- stage 3: denoise one clip ---------------------------------------------------------------------
def _frames_maps(maps: torch.Tensor | None, frames: Sequence[int], video: _Video) -> torch.Tensor | None:
    """``(T, 3, H, W)`` -> ``(1, 3, F, H, W)`` for the given frames, on the compute device."""
    if maps is None:
        return None
    idx = torch.as_tensor(list(frames), dtype=torch.long, device=maps.device)
    return maps.index_select(0, idx).to(video.device, video.dtype).permute(1, 0, 2, 3).unsqueeze(0)


def _branches(video: _Video, frames: Sequence[int],
              cond_latent: torch.Tensor | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Keyword arguments of ``MovingBGModel.forward`` for the conditional / unconditional branch.

    Both branches keep the condition latent and the motion maps; the unconditional branch has a zero
    CLIP embedding and (``uncond_drops_reference``) no bank. None when ``cfg_scale == 1``.
    """
    opts = video.options
    cond = dict(clip_embeds=video.clip_embeds, bank=video.bank, cond_latent=cond_latent,
                pose_maps=_frames_maps(video.pose_maps, frames, video),
                track_maps=_frames_maps(video.track_maps, frames, video),
                fg_scale=float(opts.fg_scale), bg_scale=float(opts.bg_scale))
    if float(opts.cfg_scale) == 1.0:
        return cond, None
    uncond = dict(cond, clip_embeds=torch.zeros_like(video.clip_embeds))
    if opts.uncond_drops_reference:
        uncond["bank"] = None
    return cond, uncond


def _merge_cfg_branches(cond: dict[str, Any], uncond: dict[str, Any], batch: int) -> dict[str, Any] | None:
    """Keyword arguments of ONE ``MovingBGModel.forward`` call for ``[cond ; uncond]``, or None.

    :func:`~.sampling.merge_branches`, plus: a bank only in the conditional branch is passed once
    with ``reference_keep = [True] * batch + [False] * batch`` (the unconditional half gets plain
    self-attention, exactly as ``bank=None``); a per-sample bank is stacked twice for the doubled batch.
    """
    bank = cond.get("bank")
    if bank is None or uncond.get("bank") is not None or "reference_keep" in cond or "reference_keep" in uncond:
        return merge_branches(cond, uncond)
    merged = merge_branches(dict(cond, bank=None), uncond)
    if merged is None:
        return None
    if not isinstance(bank, ReferenceBank):
        bank = ReferenceBank(dict(bank))
    if bank.batch_size != 1:
        bank = ReferenceBank({k: torch.cat([v, v]) for k, v in bank.features.items()})
    return dict(merged, bank=bank, reference_keep=(True,) * batch + (False,) * batch)


def _guided_predictor(video: _Video, cond: dict[str, Any], uncond: dict[str, Any] | None,
                      num_frames: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``predict(x (1, 4, F, h, w), t)`` -> guided prediction; counts U-Net work."""
    opts, counters = video.options, video.counters

    def predict(sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = guided_prediction(video.model, sample.to(video.dtype), t, cond, uncond,
                                    float(opts.cfg_scale), opts.cfg_mode, merge=_merge_cfg_branches)
        counters.unet_calls += out.calls
        counters.unet_frame_evals += out.branches * num_frames
        counters.cfg_batched = counters.cfg_batched or (out.branches == 2 and out.calls == 1)
        return out.prediction

    return predict


def _start(video: _Video, frames: Sequence[int], seed: int):
    """Fresh scheduler, timesteps, CPU generator and starting latents ``(1, 4, F, h, w)``."""
    scheduler = video.options.scheduler.build()
    timesteps = sampling_timesteps(scheduler, video.options.steps, video.options.denoise, video.device)
    generator = torch.Generator("cpu").manual_seed(seed)
    h, w = video.latent_hw
    shape = (1, video.model.config.latent_channels, len(frames), h, w)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(video.device)
    init = None
    if video.init_latents is not None:
        init = video.init_latents[list(frames)].permute(1, 0, 2, 3).unsqueeze(0).to(video.device)
    latents = initial_latents(scheduler, timesteps, noise, init)
    return scheduler, timesteps, generator, latents


def _denoise_clip(video: _Video, clip: ClipPlan, cond_latent: torch.Tensor | None) -> torch.Tensor:
    """Stage 3: sample one clip; returns its ``(F, 4, h, w)`` float32 latents on CPU."""
    scheduler, timesteps, generator, latents = _start(video, clip.frames, clip_seed(video.options.seed, clip.index))
    cond, uncond = _branches(video, clip.frames, cond_latent)
    step_fn = None if video.on_step is None else (lambda i, n: video.on_step(clip.index, i, n))
    latents = run_sampler(scheduler, timesteps, latents, _guided_predictor(video, cond, uncond, clip.length),
                          generator=generator, on_step=step_fn, check_interrupt=video.check_interrupt)
    return latents[0].permute(1, 0, 2, 3).to("cpu", torch.float32)


# ---- stage 4: hand over ----------------------------------------------------------------------------
def _hand_over(video: _Video, last: torch.Tensor, encode: EncodeFn | None,
               decode: DecodeFn | None) -> torch.Tensor | None:
    """Stage 4: condition latent ``(1, 4, h, w)`` (on device) of the next clip from ``last`` ``(1, 4, h, w)``.

    ``"latent"``: ``last`` itself. ``"decode_encode"``: ``encode(decode(last).clamp(0, 1))`` -- the
    decoded frame is clamped like a saved image would be; ``last`` is passed on CPU (float32).
    """
    if not video.model.config.use_concat:
        return None
    if video.options.handover == "latent":
        return last.to(video.device, video.dtype)
    with torch.no_grad():
        image = decode(last).clamp(0.0, 1.0)
        cond = encode(image)
    if tuple(cond.shape) != tuple(last.shape):
        raise ValueError(f"encode(decode(latent)) must give {tuple(last.shape)}, got {tuple(cond.shape)}")
    return cond.to(video.device, video.dtype)


# ---- stage 5: assemble -----------------------------------------------------------------------------
def _assemble(out: torch.Tensor, clip: ClipPlan, latents: torch.Tensor,
              cond_latent: torch.Tensor | None) -> float | None:
    """Stage 5: write the clip's emitted frames into ``out`` ``(T, 4, h, w)``.

    For a later clip, frame 0 of ``latents`` is overwritten IN PLACE by the previous clip's last frame
    (``out[clip.frames[0]]``), so the clip as seen by callers starts exactly where the last one ended.

    Returns:
        the residual ``mean |sampled frame 0 - condition|`` for later clips, else None.
    """
    residual = None
    if clip.cond == "previous":
        if cond_latent is not None:
            residual = float((latents[0] - cond_latent[0].to(latents)).abs().mean())
        latents[0] = out[clip.frames[0]]
    off = clip.emit_offset
    out[clip.emit[0]:clip.emit[-1] + 1] = latents[off:off + len(clip.emit)]
    return residual


def generate(
    model: MovingBGModel,
    *,
    ref_latent: torch.Tensor,
    clip_embeds: torch.Tensor | None,
    pose_maps: torch.Tensor | None,
    track_maps: torch.Tensor | None,
    num_frames: int,
    options: GenerationOptions = GenerationOptions(),
    encode: EncodeFn | None = None,
    decode: DecodeFn | None = None,
    on_step: StepFn | None = None,
    check_interrupt: Callable[[], None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    pose_mismatch: float | None = None,
    init_latents: torch.Tensor | None = None,
    on_clip: ClipFn | None = None,
) -> GenerationResult:
    """Progressive long-video generation (clip k+1 conditioned on clip k's last frame).

    Args:
        model: the network (its mode is left as is; call ``.eval()`` before).
        ref_latent: ``(1, 4, h, w)`` reference latent (model space).
        clip_embeds: ``(1, 1, D)`` CLIP image embedding of the reference, or None (zeros).
        pose_maps, track_maps: ``(T, 3, H, W)`` float 0..1 (``H = 8 h``), or None; stay where they
            are, each clip's slice is moved to ``device``.
        num_frames: ``T``.
        options: :class:`GenerationOptions`.
        encode: ``(N, 3, H, W)`` 0..1 -> ``(N, 4, h, w)`` model-space latents; decode: the inverse.
            Needed only for ``handover="decode_encode"`` with more than one clip.
        on_step: ``on_step(clip, step, steps)`` after every step (``step`` 0-based).
        check_interrupt: called before every step; raise inside it to stop.
        device, dtype: compute device / dtype of the model inputs (default: the model's). The
            sampler state is float32.
        pose_mismatch: caller's distance between the first driving pose and the reference pose
            (needed for ``first_condition="auto"``).
        init_latents: ``(T, 4, h, w)`` model-space latents to start from (needed for ``denoise < 1``).
        on_clip: ``on_clip(clip_plan, latents (F, 4, h, w) CPU)`` after each clip (frame 0 of later
            clips already replaced by the previous clip's last frame); e.g. for previews.

    Returns:
        :class:`GenerationResult` with ``(T, 4, h, w)`` CPU latents.
    """
    plan = plan_progressive(num_frames, options.clip_length)
    _check_clip_length(model, "clip_length", options.clip_length)
    if options.handover == "decode_encode" and len(plan) > 1 and model.config.use_concat \
            and (encode is None or decode is None):
        raise ValueError("handover='decode_encode' needs both encode and decode callables "
                         "(or use handover='latent')")
    video = _prepare(model, ref_latent, clip_embeds, num_frames, options, (pose_maps, track_maps),
                     init_latents, (on_step, check_interrupt), device, dtype, pose_mismatch)
    out = torch.empty(num_frames, model.config.latent_channels, *video.latent_hw, dtype=torch.float32)
    cond, residuals = video.first_cond, []
    for clip in plan:
        latents = _denoise_clip(video, clip, cond)
        residual = _assemble(out, clip, latents, cond)
        if residual is not None:
            residuals.append(residual)
        if on_clip is not None:
            on_clip(clip, latents)
        if clip.stop < num_frames:
            cond = _hand_over(video, out[clip.frames[-1]].unsqueeze(0), encode, decode)
        logger.debug("clip %d/%d done (frames %d..%d)", clip.index + 1, len(plan), clip.start, clip.stop - 1)
    return _result(video, out, "progressive", tuple(plan), residuals)


def _result(video: _Video, out: torch.Tensor, method: str, plan: tuple, residuals: list[float]) -> GenerationResult:
    c = video.counters
    opts = video.options
    steps = min(opts.steps, max(1, int(round(opts.steps * float(opts.denoise)))))
    return GenerationResult(out, method, plan, steps, c.unet_calls, c.unet_frame_evals, c.reference_runs,
                            video.first_condition, c.cfg_batched, tuple(residuals))


# ---- baseline: sliding windows with latent averaging -----------------------------------------------
def _window_predictor(video: _Video, windows: list[list[int]]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``predict(x (1, 4, T, h, w), t)``: every window denoised, overlaps averaged."""
    branches = [_branches(video, win, video.first_cond if win[0] == 0 else None) for win in windows]
    predictors = [_guided_predictor(video, c, u, len(win)) for win, (c, u) in zip(windows, branches)]

    def predict(sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        values = []
        for win, predictor in zip(windows, predictors):
            if video.check_interrupt is not None:
                video.check_interrupt()
            pred = predictor(sample[:, :, win[0]:win[-1] + 1], t)
            values.append(pred[0].permute(1, 0, 2, 3).float())
        avg = average_windows(windows, values, video.num_frames)
        return avg.permute(1, 0, 2, 3).unsqueeze(0)

    return predict


def sliding_window_generate(
    model: MovingBGModel,
    *,
    ref_latent: torch.Tensor,
    clip_embeds: torch.Tensor | None,
    pose_maps: torch.Tensor | None,
    track_maps: torch.Tensor | None,
    num_frames: int,
    options: GenerationOptions = GenerationOptions(),
    encode: EncodeFn | None = None,
    decode: DecodeFn | None = None,
    on_step: StepFn | None = None,
    check_interrupt: Callable[[], None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    pose_mismatch: float | None = None,
    init_latents: torch.Tensor | None = None,
    window: int | None = None,
    overlap: int = 4,
) -> GenerationResult:
    """AnimateAnyone / MagicAnimate baseline: overlapping windows, predictions averaged every step.

    Same arguments as :func:`generate` (``encode`` / ``decode`` are unused), plus ``window``
    (default ``options.clip_length``) and ``overlap``. The whole-video latent ``(1, 4, T, h, w)`` is
    sampled by ONE scheduler; at each step every window's guided prediction is computed and frames
    covered by several windows get the mean (:func:`~.planner.average_windows`) before the one
    scheduler step (as AnimateDiff / Moore-AnimateAnyone accumulate ``noise_pred``; the step is affine
    in the prediction with the same coefficients for every frame, so this equals averaging the
    windows' stepped latents, and it also works for multistep samplers). Only the window that
    starts at frame 0 gets the first condition (reference / blank); the others have none. Noise comes
    from one CPU generator seeded with ``options.seed``. ``on_step(0, step, steps)`` once per step;
    ``check_interrupt`` before every step and every window. Memory grows with ``T`` (whole latent).
    """
    window = window if window is not None else options.clip_length
    windows = plan_sliding_window(num_frames, window, overlap)
    _check_clip_length(model, "window", window)
    video = _prepare(model, ref_latent, clip_embeds, num_frames, options, (pose_maps, track_maps),
                     init_latents, (on_step, check_interrupt), device, dtype, pose_mismatch)
    scheduler, timesteps, generator, latents = _start(video, range(num_frames), options.seed)
    step_fn = None if on_step is None else (lambda i, n: on_step(0, i, n))
    latents = run_sampler(scheduler, timesteps, latents, _window_predictor(video, windows), generator=generator,
                          on_step=step_fn, check_interrupt=check_interrupt)
    out = latents[0].permute(1, 0, 2, 3).to("cpu", torch.float32).contiguous()
    return _result(video, out, "sliding_window", tuple(tuple(w) for w in windows), [])
