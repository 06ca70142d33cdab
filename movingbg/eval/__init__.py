"""Evaluation metrics for MovingBG (issue 6).

Frame quality against ground truth (the paper's Tables 1 and 2): :func:`psnr`, :func:`ssim`
(own implementations), LPIPS (:mod:`.lpips_net`) and FVD (:mod:`.fvd`), whose networks are written
here and load the official weights (downloaded on first use with a SHA-256 check; offline they
report "skipped: weights unavailable (...)").

What the paper claims and peers do not measure:

* :func:`background_motion_error` / :func:`measure_background_motion`: does the generated
  background follow the guidance tracks (re-tracked with KLT, end-point error in px)?
* :func:`boundary_continuity`: are the progressive clips' seams visible?
* :func:`drift`: do colours and quality drift over a long video?

:func:`evaluate` runs whatever the inputs allow; ``python -m movingbg.eval`` is its CLI.
"""

from .frame import frame_quality, psnr, psnr_frames, ssim, ssim_frames
from .motion import BackgroundMotionReport, background_motion_error, measure_background_motion, retrack_guidance
from .report import METRICS, MetricResult, evaluate, format_table, to_jsonable
from .temporal import boundary_continuity, clip_boundaries, drift, frame_differences
from .tracks_io import load_tracks, save_tracks

__all__ = [
    "psnr",
    "ssim",
    "psnr_frames",
    "ssim_frames",
    "frame_quality",
    "background_motion_error",
    "measure_background_motion",
    "retrack_guidance",
    "BackgroundMotionReport",
    "boundary_continuity",
    "clip_boundaries",
    "drift",
    "frame_differences",
    "evaluate",
    "MetricResult",
    "METRICS",
    "format_table",
    "to_jsonable",
    "load_tracks",
    "save_tracks",
]
