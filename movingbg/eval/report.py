"""Run every metric that the given inputs allow, skipping the others with the reason.

:func:`evaluate` returns one :class:`MetricResult` per metric name:

=====================  ======================================  ==========================
name                   needs                                   headline value
=====================  ======================================  ==========================
psnr, ssim             ``gt``                                  mean over frames
lpips                  ``gt`` + LPIPS weights                  mean over frames
fvd                    ``gt`` (>= 32 frames) + I3D weights     FVD over 16-frame clips
background_motion      ``guidance`` (``alpha`` optional)       mean end-point error, px
boundary_continuity    ``clip_length`` or ``boundaries``       across / within ratio
drift                  ``reference``                           colour-shift slope per frame
=====================  ======================================  ==========================
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..types import Tracks
from ..weights import ChecksumError, WeightsNotFoundError

logger = logging.getLogger(__name__)

__all__ = ["MetricResult", "evaluate", "to_jsonable", "format_table", "METRICS"]

METRICS = ("psnr", "ssim", "lpips", "fvd", "background_motion", "boundary_continuity", "drift")
"""Metric names in report order."""


@dataclass
class MetricResult:
    """One metric's outcome.

    Attributes:
        name: metric name (see :data:`METRICS`).
        status: ``"ok"``, ``"skipped"`` (inputs or weights unavailable) or ``"error"``.
        value: headline number (None unless ``status == "ok"``).
        unit: unit of ``value`` (``"dB"``, ``"px"``, ``""``...).
        better: ``"higher"``, ``"lower"`` or ``"closer to 1"``.
        reason: why it was skipped or failed (empty when ok).
        details: further numbers and per-frame arrays.
    """

    name: str
    status: str
    value: Optional[float] = None
    unit: str = ""
    better: str = ""
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """``"12.3 dB"``, ``"skipped: <reason>"`` or ``"error: <reason>"``."""
        if self.status != "ok":
            return f"{self.status}: {self.reason}"
        return f"{_fmt(self.value)} {self.unit}".strip()

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({"status": self.status, "value": self.value, "unit": self.unit, "better": self.better,
                            "reason": self.reason, "details": self.details})


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.1f}"
    return str(v)


def to_jsonable(obj: Any) -> Any:
    """numpy arrays/scalars -> lists/numbers; inf -> ``"inf"``/``"-inf"``; NaN -> None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    return obj


def _skip(name: str, reason: str, **kw: Any) -> MetricResult:
    return MetricResult(name, "skipped", reason=reason, **kw)


def _guard(name: str, fn: Callable[[], MetricResult], **kw: Any) -> MetricResult:
    """Run one metric; missing weights -> skipped, bad inputs/files -> error (never raises)."""
    try:
        return fn()
    except WeightsNotFoundError as exc:
        return _skip(name, f"weights unavailable ({exc})", **kw)
    except ChecksumError as exc:
        return MetricResult(name, "error", reason=f"weights failed verification ({exc})", **kw)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        logger.debug("%s failed", name, exc_info=True)
        return MetricResult(name, "error", reason=str(exc), **kw)


def evaluate(
    generated: np.ndarray,
    *,
    reference: Optional[np.ndarray] = None,
    gt: Optional[np.ndarray] = None,
    guidance: Optional[Tracks] = None,
    alpha: Optional[np.ndarray] = None,
    reference_alpha: Optional[np.ndarray] = None,
    clip_length: Optional[int] = None,
    boundaries: Optional[Sequence[int]] = None,
    metrics: Sequence[str] = METRICS,
    lpips_net: str = "alex",
    weight_dirs: Optional[Sequence[str]] = None,
    download_dir: Optional[str] = None,
    allow_download: Optional[bool] = None,
    device: Optional[str] = None,
) -> dict[str, MetricResult]:
    """Compute every requested metric the inputs allow.

    Args:
        generated: ``(T, H, W, 3)`` uint8 RGB generated video.
        reference: ``(H, W, 3)`` uint8 reference image (same size as ``generated``), for ``drift``.
        gt: ``(T, H, W, 3)`` uint8 ground truth, for psnr/ssim/lpips/fvd.
        guidance: background :class:`Tracks` with ``T`` frames, for ``background_motion``.
        alpha: ``(T, H, W)`` float matte of the generated person (0..1), optional; restricts the
            motion and drift metrics to the background.
        reference_alpha: ``(H, W)`` matte of the reference image; default ``alpha[0]`` (the first
            frame is generated in the reference pose) when ``alpha`` is given.
        clip_length: progressive clip length ``L`` (seams from the plan), or ``boundaries``
            directly, for ``boundary_continuity``.
        metrics: which metrics to run (names from :data:`METRICS`).
        lpips_net: ``"alex"`` or ``"vgg"``.
        weight_dirs, download_dir, allow_download: weight lookup (defaults:
            :mod:`movingbg.eval._weights`).
        device: torch device for LPIPS/FVD (default CUDA when available).

    Returns:
        ``{name: MetricResult}`` in :data:`METRICS` order.
    """
    from .frame import frame_quality
    from .temporal import boundary_continuity, clip_boundaries, drift

    g = np.asarray(generated)
    if g.ndim != 4 or g.shape[-1] != 3 or g.dtype != np.uint8:
        raise ValueError(f"generated must be (T, H, W, 3) uint8 RGB, got {g.shape} {g.dtype}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"metrics: unknown names {unknown}; known: {list(METRICS)}")
    if gt is not None and np.asarray(gt).shape != g.shape:
        raise ValueError(f"gt must have the shape of generated {g.shape}, got {np.asarray(gt).shape}")
    wkw = dict(search_dirs=weight_dirs, download_dir=download_dir, allow_download=allow_download)
    out: dict[str, MetricResult] = {}
    want = set(metrics)
    no_gt = "needs a ground-truth video (gt / --gt)"

    if want & {"psnr", "ssim"}:
        if gt is None:
            fq = None
        else:
            try:
                fq = frame_quality(g, np.asarray(gt))
            except ValueError as exc:
                fq = exc
        for name, unit in (("psnr", "dB"), ("ssim", "")):
            if name not in want:
                continue
            if fq is None:
                out[name] = _skip(name, no_gt, unit=unit, better="higher")
            elif isinstance(fq, Exception):
                out[name] = MetricResult(name, "error", unit=unit, better="higher", reason=str(fq))
            else:
                extra = {"num_identical": fq["num_identical"]} if name == "psnr" else {}
                out[name] = MetricResult(name, "ok", fq[name], unit, "higher",
                                         details={"per_frame": fq[f"{name}_per_frame"], **extra})

    if "lpips" in want:
        if gt is None:
            out["lpips"] = _skip("lpips", no_gt, better="lower")
        else:
            def run_lpips() -> MetricResult:
                from .lpips_net import load_lpips, lpips_frames

                model = load_lpips(lpips_net, **wkw)
                d = lpips_frames(g, np.asarray(gt), model, device=device)
                return MetricResult("lpips", "ok", float(d.mean()), "", "lower",
                                    details={"net": lpips_net, "version": "0.1", "per_frame": d})
            out["lpips"] = _guard("lpips", run_lpips, better="lower")

    if "fvd" in want:
        from .fvd import FVD_CLIP_FRAMES

        if gt is None:
            out["fvd"] = _skip("fvd", no_gt, better="lower")
        elif g.shape[0] < 2 * FVD_CLIP_FRAMES:
            out["fvd"] = _skip("fvd", f"needs >= {2 * FVD_CLIP_FRAMES} frames (two {FVD_CLIP_FRAMES}-frame clips "
                                      f"per side), the video has {g.shape[0]}", better="lower")
        else:
            def run_fvd() -> MetricResult:
                from .fvd import fvd, load_i3d

                model = load_i3d(**wkw)
                res = fvd(g, np.asarray(gt), model, device=device)
                return MetricResult("fvd", "ok", res["fvd"], "", "lower",
                                    details={k: v for k, v in res.items() if k != "fvd"})
            out["fvd"] = _guard("fvd", run_fvd, better="lower")

    if "background_motion" in want:
        if guidance is None:
            out["background_motion"] = _skip("background_motion", "needs guidance tracks (--tracks or --driving)",
                                             unit="px", better="lower")
        else:
            def run_motion() -> MetricResult:
                from .motion import measure_background_motion

                rep = measure_background_motion(g, guidance, alpha)
                return MetricResult("background_motion", "ok", rep.epe, "px", "lower", details=rep.to_dict())
            out["background_motion"] = _guard("background_motion", run_motion, unit="px", better="lower")

    if "boundary_continuity" in want:
        b = list(boundaries) if boundaries is not None else None
        if b is None and clip_length is not None:
            try:
                b = clip_boundaries(g.shape[0], int(clip_length))
            except ValueError as exc:
                b = exc
        if b is None:
            out["boundary_continuity"] = _skip("boundary_continuity", "needs the clip length (--clip-length)",
                                               better="closer to 1")
        elif isinstance(b, Exception):
            out["boundary_continuity"] = MetricResult("boundary_continuity", "error", better="closer to 1",
                                                      reason=str(b))
        elif not b:
            out["boundary_continuity"] = _skip("boundary_continuity",
                                               f"the video ({g.shape[0]} frames) is a single clip: no seam",
                                               better="closer to 1")
        else:
            def run_cont() -> MetricResult:
                res = boundary_continuity(g, b)
                return MetricResult("boundary_continuity", "ok", res["ratio"], "", "closer to 1",
                                    details={**{k: v for k, v in res.items() if k != "ratio"}, "boundaries": b})
            out["boundary_continuity"] = _guard("boundary_continuity", run_cont, better="closer to 1")

    if "drift" in want:
        if reference is None:
            out["drift"] = _skip("drift", "needs the reference image (--reference)", unit="dE/frame",
                                 better="closer to 0")
        else:
            def run_drift() -> MetricResult:
                ra = reference_alpha
                if ra is None and alpha is not None:
                    ra = np.asarray(alpha)[0]
                res = drift(g, np.asarray(reference), alpha=alpha, reference_alpha=ra)
                if gt is not None:
                    vs_gt = drift(g, np.asarray(gt), alpha=alpha)
                    res["vs_gt"] = {k: v for k, v in vs_gt.items() if not isinstance(v, np.ndarray) or v.ndim < 2}
                return MetricResult("drift", "ok", res["color_shift_slope"], "dE/frame", "closer to 0", details=res)
            out["drift"] = _guard("drift", run_drift, unit="dE/frame", better="closer to 0")

    return {name: out[name] for name in METRICS if name in out}


_HEADLINE_EXTRA = {
    "background_motion": ("relative_epe", "static_epe", "coverage"),
    "boundary_continuity": ("across", "within", "ratio_local", "worst_ratio"),
    "drift": ("color_shift_first", "color_shift_last", "psnr_slope"),
    "fvd": ("num_generated_clips", "num_real_clips"),
}


def format_table(results: dict[str, MetricResult]) -> str:
    """A plain-text table: metric, value, unit, better, notes (key extras or the skip reason)."""
    rows = [("metric", "value", "unit", "better", "notes")]
    for name, r in results.items():
        if r.status == "ok":
            notes = ", ".join(f"{k}={_fmt(r.details.get(k))}" for k in _HEADLINE_EXTRA.get(name, ()) if k in r.details)
            rows.append((name, _fmt(r.value), r.unit, r.better, notes))
        else:
            rows.append((name, "-", r.unit, r.better, f"{r.status}: {r.reason}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 5)
    return "\n".join(lines)
