"""Background-motion fidelity: does the generated background move the way the guidance tracks say?

The paper conditions generation on sparse background point tracks (M = (1 - alpha) * T) and claims
a background that follows them; peers' backgrounds "stay static or shake" (FACTS.md). This module
measures it by re-tracking the guidance's own query points in the generated video.

Matching rule (no association problem): every maximal run of frames in which a guidance track is
visible is one query. The query starts at the guidance position on the first frame of the run where
that position lies on the generated video's background (off the person by ``occlusion_margin``)
and is tracked forward through the generated frames with the same pyramidal Lucas-Kanade step as
:func:`movingbg.preprocess.tracks.track_klt` (global-affine compensation, person pixels filled
with the global motion, forward-backward check). It is dropped for good (until the guidance run
ends) when LK fails, the forward-backward error exceeds ``fb_threshold``, it leaves the frame or it
comes within ``occlusion_margin`` of the generated person. On every later frame of the run where it
is alive, its position is compared with the guidance position:

* ``epe``: mean end-point error in px (of the generated video) over those samples (start frames,
  trivially 0, are excluded);
* ``velocity_epe``: mean error of the per-frame displacement (does not accumulate);
* ``static_epe``: the ``epe`` a frozen background would get on the same samples (mean distance of
  the guidance from its run start), and ``relative_epe = epe / static_epe`` (0 = perfect, about 1 =
  no better than a static background, > 1 = moving the wrong way);
* ``coverage``: fraction of guidance samples (after a run's first frame) that were measured — lost
  tracks (textureless or shaking backgrounds) lower it.

Guidance coordinates are rescaled (pixel centres preserved) when the generated video has another
size; errors are in generated-video pixels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..preprocess.tracks import lk_params, lk_step, person_masks, to_gray
from ..types import Tracks

logger = logging.getLogger(__name__)

__all__ = ["BackgroundMotionReport", "retrack_guidance", "measure_background_motion", "background_motion_error"]



@dataclass(frozen=True, eq=False)
class BackgroundMotionReport:
    """Result of :func:`measure_background_motion` (see the module docstring).

    Attributes:
        epe: mean end-point error in px (NaN when nothing could be measured).
        median_epe: median end-point error in px.
        velocity_epe: mean per-frame displacement error in px.
        static_epe: mean guidance displacement from the run start on the same samples, px.
        relative_epe: ``epe / static_epe`` (NaN when ``static_epe`` is 0).
        per_frame_epe: ``(T,)`` mean error per frame (NaN where no sample).
        num_samples: measured (frame, track) samples.
        coverage: measured samples / guidance samples after their run's first frame, in 0..1.
        retracked: the re-tracked points as :class:`Tracks` (visible where alive), in generated px.
        scale: ``(sx, sy)`` applied to the guidance coordinates.
    """

    epe: float
    median_epe: float
    velocity_epe: float
    static_epe: float
    relative_epe: float
    per_frame_epe: np.ndarray
    num_samples: int
    coverage: float
    retracked: Tracks = field(repr=False)
    scale: tuple[float, float] = (1.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no track arrays)."""
        return {
            "epe": self.epe,
            "median_epe": self.median_epe,
            "velocity_epe": self.velocity_epe,
            "static_epe": self.static_epe,
            "relative_epe": self.relative_epe,
            "per_frame_epe": self.per_frame_epe,
            "num_samples": self.num_samples,
            "coverage": self.coverage,
            "num_tracks": self.retracked.num_tracks,
            "scale": list(self.scale),
        }


def _scaled_guidance(guidance: Tracks, width: int, height: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    sx, sy = width / guidance.width, height / guidance.height
    pts = guidance.points.astype(np.float64).copy()
    if (sx, sy) != (1.0, 1.0):
        pts[..., 0] = (pts[..., 0] + 0.5) * sx - 0.5
        pts[..., 1] = (pts[..., 1] + 0.5) * sy - 0.5
    inside = (pts[..., 0] >= 0) & (pts[..., 1] >= 0) & (pts[..., 0] <= width - 1) & (pts[..., 1] <= height - 1)
    vis = guidance.visible & inside & np.isfinite(pts).all(axis=-1)
    return pts.astype(np.float32), vis, (sx, sy)


def _check_inputs(generated: Any, guidance: Any, alpha: Any) -> tuple[np.ndarray, Optional[np.ndarray]]:
    g = np.asarray(generated)
    if g.ndim != 4 or g.shape[-1] != 3 or g.dtype != np.uint8:
        raise ValueError(f"generated must be (T, H, W, 3) uint8 RGB, got {g.shape} {g.dtype}")
    if not isinstance(guidance, Tracks):
        raise ValueError(f"guidance must be a movingbg.types.Tracks, got {type(guidance).__name__}")
    T, H, W = g.shape[:3]
    if guidance.num_frames != T:
        raise ValueError(f"guidance has {guidance.num_frames} frames but generated has {T}; "
                         "they must describe the same frames (trim the longer one)")
    if T < 2 or H < 8 or W < 8:
        raise ValueError(f"generated must have >= 2 frames of >= 8 x 8 px, got {g.shape}")
    a = None
    if alpha is not None:
        a = np.asarray(alpha, dtype=np.float32)
        if a.shape != (T, H, W):
            raise ValueError(f"alpha must be (T, H, W) = {(T, H, W)} (matte of generated, 1 = person), got {a.shape}")
    return g, a


def retrack_guidance(
    generated: np.ndarray,
    guidance: Tracks,
    alpha: Optional[np.ndarray] = None,
    *,
    win_size: int = 21,
    levels: int = 3,
    fb_threshold: float = 1.0,
    compensate: bool = True,
    occlusion_margin: Optional[int] = None,
) -> tuple[Tracks, np.ndarray, np.ndarray, tuple[float, float]]:
    """Re-track the guidance's query points in the generated video (matching rule: module docstring).

    Args:
        generated: ``(T, H, W, 3)`` uint8 RGB generated video.
        guidance: :class:`Tracks` with ``T`` frames (any frame size; rescaled to ``W x H``).
        alpha: optional ``(T, H, W)`` float matte of the generated person in 0..1 (1 = person).
        win_size, levels, fb_threshold, compensate: LK settings as in ``track_klt``.
        occlusion_margin: px kept from the generated person (default ``win_size // 4``).

    Returns:
        ``(retracked, run_start, guidance_points, scale)``: ``retracked`` :class:`Tracks` in generated
        px (visible where the re-tracked point is alive); ``run_start`` ``(T, N)`` int, the frame
        where the query of the run containing each sample started (-1 where not alive);
        ``guidance_points`` ``(T, N, 2)`` rescaled guidance; ``scale`` ``(sx, sy)``.
    """
    g, a = _check_inputs(generated, guidance, alpha)
    T, H, W = g.shape[:3]
    if int(win_size) < 5 or int(win_size) % 2 == 0:
        raise ValueError(f"win_size must be odd and >= 5, got {win_size}")
    if not float(fb_threshold) > 0:
        raise ValueError(f"fb_threshold must be > 0 (px), got {fb_threshold!r}")
    margin = int(win_size) // 4 if occlusion_margin is None else int(occlusion_margin)
    if margin < 0:
        raise ValueError(f"occlusion_margin must be >= 0, got {occlusion_margin}")
    gp, gv, scale = _scaled_guidance(guidance, W, H)
    N = gp.shape[1]

    fg, danger = person_masks(a, margin) if a is not None else (None, None)

    def safe(t: int, p: np.ndarray) -> np.ndarray:
        if danger is None or len(p) == 0:
            return np.ones(len(p), dtype=bool)
        xi = np.clip(np.rint(p[:, 0]), 0, W - 1).astype(np.int64)
        yi = np.clip(np.rint(p[:, 1]), 0, H - 1).astype(np.int64)
        return ~danger[t, yi, xi]

    lk = lk_params(win_size, levels)
    gray = [to_gray(f) for f in g]
    out = np.zeros((T, N, 2), dtype=np.float32)
    alive = np.zeros((T, N), dtype=bool)
    run_start = np.full((T, N), -1, dtype=np.int64)
    started = np.zeros(N, dtype=bool)  # a query was started in the current guidance run
    start_of = np.full(N, -1, dtype=np.int64)
    active = np.zeros(0, dtype=np.int64)
    cur = np.zeros((0, 2), dtype=np.float32)
    for t in range(T):
        started &= gv[t]  # a run ends where the guidance is invisible
        if t > 0 and len(active):
            p1, fb, ok = lk_step(gray[t - 1], gray[t], cur, lk, compensate,
                                  None if fg is None else fg[t - 1], None if fg is None else fg[t])
            ok &= (fb <= float(fb_threshold)) & gv[t, active] & safe(t, p1)
            active, cur = active[ok], p1[ok].astype(np.float32)
        # new queries: guidance visible, no query yet in this run, on the generated background
        cand = np.flatnonzero(gv[t] & ~started)
        if len(cand):
            cand = cand[safe(t, gp[t, cand])]
            started[cand] = True
            start_of[cand] = t
            active = np.concatenate([active, cand])
            cur = np.concatenate([cur, gp[t, cand].astype(np.float32)])
        out[t] = out[t - 1] if t > 0 else gp[0]
        out[t, active] = cur
        alive[t, active] = True
        run_start[t, active] = start_of[active]
    retracked = Tracks(out, alive, W, H)
    return retracked, run_start, gp, scale


def measure_background_motion(
    generated: np.ndarray,
    guidance: Tracks,
    alpha: Optional[np.ndarray] = None,
    **lk_options: Any,
) -> BackgroundMotionReport:
    """Compare the generated video's background motion with the guidance tracks.

    Args:
        generated: ``(T, H, W, 3)`` uint8 RGB generated video.
        guidance: the background :class:`Tracks` the video was generated with (``T`` frames).
        alpha: optional ``(T, H, W)`` float matte of the generated person in 0..1 (1 = person).
        **lk_options: ``win_size``, ``levels``, ``fb_threshold``, ``compensate``,
            ``occlusion_margin`` of :func:`retrack_guidance`.

    Returns:
        :class:`BackgroundMotionReport`.
    """
    retracked, run_start, gp, scale = retrack_guidance(generated, guidance, alpha, **lk_options)
    T = gp.shape[0]
    _, gv, _ = _scaled_guidance(guidance, retracked.width, retracked.height)
    t_idx = np.arange(T)[:, None]
    measured = retracked.visible & (run_start >= 0) & (run_start < t_idx)
    eligible = np.zeros_like(gv)
    eligible[1:] = gv[1:] & gv[:-1]
    err = np.linalg.norm(retracked.points.astype(np.float64) - gp.astype(np.float64), axis=-1)
    n = int(measured.sum())
    anchor = np.zeros_like(gp, dtype=np.float64)
    rows, cols = np.nonzero(measured)
    anchor[rows, cols] = gp[run_start[rows, cols], cols]
    static = np.linalg.norm(gp.astype(np.float64) - anchor, axis=-1)
    per_frame = np.full(T, np.nan)
    for t in range(T):
        if measured[t].any():
            per_frame[t] = float(err[t, measured[t]].mean())
    vel_ok = np.zeros_like(measured)
    vel_ok[1:] = measured[1:] & retracked.visible[:-1] & (run_start[1:] == run_start[:-1])
    if vel_ok.any():
        dr = retracked.points[1:].astype(np.float64) - retracked.points[:-1]
        dg = gp[1:].astype(np.float64) - gp[:-1]
        vel = float(np.linalg.norm(dr - dg, axis=-1)[vel_ok[1:]].mean())
    else:
        vel = math.nan
    if n == 0:
        logger.warning("background motion: no guidance point could be measured in the generated video "
                       "(%d tracks, coverage 0)", gp.shape[1])
        epe = med = stat = math.nan
    else:
        epe, med, stat = float(err[measured].mean()), float(np.median(err[measured])), float(static[measured].mean())
    rel = epe / stat if (n and stat > 0) else math.nan
    cov = float(n / eligible.sum()) if eligible.sum() else math.nan
    logger.debug("background motion: epe %.3f px (static %.3f), %d samples, coverage %.2f", epe, stat, n, cov)
    return BackgroundMotionReport(epe, med, vel, stat, rel, per_frame, n, cov, retracked, scale)


def background_motion_error(
    generated: np.ndarray,
    guidance: Tracks,
    alpha: Optional[np.ndarray] = None,
    **lk_options: Any,
) -> float:
    """Mean end-point error (px) between the guidance tracks and the generated background's motion.

    Shorthand for ``measure_background_motion(...).epe``; see :func:`measure_background_motion`
    for the details (static baseline, coverage, per-frame errors). NaN when nothing is measurable.

    Args:
        generated: ``(T, H, W, 3)`` uint8 RGB generated video.
        guidance: background :class:`Tracks` with ``T`` frames.
        alpha: optional ``(T, H, W)`` float matte of the generated person in 0..1 (1 = person).
    """
    return measure_background_motion(generated, guidance, alpha, **lk_options).epe
