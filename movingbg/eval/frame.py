"""Frame-quality metrics against ground truth: PSNR and SSIM (the paper's Tables 1 and 2).

Both are computed per frame on RGB ``uint8`` frames (value range 0..255) and averaged over the
video, as human-animation papers report them.

* PSNR: ``10 log10(255^2 / MSE)`` over all pixels and channels of a frame; ``inf`` for identical
  frames.
* SSIM: Wang et al. (2004) with an 11 x 11 Gaussian window (sigma 1.5), ``K1 = 0.01``,
  ``K2 = 0.03``, population (not sample) statistics, computed on each RGB channel and averaged over
  the "valid" region (windows fully inside the image). This equals scikit-image's
  ``structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=255, channel_axis=-1)``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["psnr", "ssim", "psnr_frames", "ssim_frames", "frame_quality", "SSIM_WINDOW", "SSIM_SIGMA"]

SSIM_WINDOW = 11
"""Side of the Gaussian SSIM window in px."""

SSIM_SIGMA = 1.5
"""Standard deviation of the Gaussian SSIM window in px."""

_K1, _K2 = 0.01, 0.03


def _as_images(a: Any, b: Any, name_a: str, name_b: str, ndim: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a), np.asarray(b)
    for arr, name in ((x, name_a), (y, name_b)):
        if arr.ndim not in ndim or arr.shape[-1] != 3:
            want = " or ".join({3: "(H, W, 3)", 4: "(T, H, W, 3)"}[n] for n in ndim)
            raise ValueError(f"{name} must be {want} RGB, got shape {arr.shape}")
        if arr.dtype != np.uint8:
            raise ValueError(f"{name} must be uint8 (0..255), got {arr.dtype}")
    if x.shape != y.shape:
        raise ValueError(f"{name_a} {x.shape} and {name_b} {y.shape} must have the same shape")
    return x, y


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two RGB images.

    Args:
        a, b: ``(H, W, 3)`` uint8 images in 0..255.

    Returns:
        ``10 log10(255^2 / MSE)``; ``inf`` when the images are identical.
    """
    x, y = _as_images(a, b, "a", "b", (3,))
    mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0 ** 2 / mse)


def _gauss_kernel() -> np.ndarray:
    r = SSIM_WINDOW // 2
    k = np.exp(-(np.arange(-r, r + 1, dtype=np.float64) ** 2) / (2.0 * SSIM_SIGMA ** 2))
    return k / k.sum()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM between two RGB images (see the module docstring for the exact definition).

    Args:
        a, b: ``(H, W, 3)`` uint8 images in 0..255, at least 11 x 11 px.

    Returns:
        SSIM in ``[-1, 1]`` (1 for identical images).
    """
    x, y = _as_images(a, b, "a", "b", (3,))
    H, W = x.shape[:2]
    if H < SSIM_WINDOW or W < SSIM_WINDOW:
        raise ValueError(f"images must be at least {SSIM_WINDOW}x{SSIM_WINDOW} px for SSIM, got {W}x{H}")
    k = _gauss_kernel()
    r = SSIM_WINDOW // 2
    x = x.astype(np.float64)
    y = y.astype(np.float64)

    def blur(img: np.ndarray) -> np.ndarray:
        # any border mode: only the valid region (windows inside the image) is kept
        return cv2.sepFilter2D(img, cv2.CV_64F, k, k, borderType=cv2.BORDER_REFLECT)[r : H - r, r : W - r]

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = (_K1 * 255.0) ** 2, (_K2 * 255.0) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def psnr_frames(generated: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame PSNR. ``generated``, ``gt``: ``(T, H, W, 3)`` uint8. Returns ``(T,)`` float64 dB."""
    g, r = _as_images(generated, gt, "generated", "gt", (4,))
    return np.array([psnr(g[t], r[t]) for t in range(len(g))], dtype=np.float64)


def ssim_frames(generated: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame SSIM. ``generated``, ``gt``: ``(T, H, W, 3)`` uint8. Returns ``(T,)`` float64."""
    g, r = _as_images(generated, gt, "generated", "gt", (4,))
    return np.array([ssim(g[t], r[t]) for t in range(len(g))], dtype=np.float64)


def frame_quality(generated: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    """PSNR and SSIM of a generated video against its ground truth.

    Args:
        generated, gt: ``(T, H, W, 3)`` uint8 RGB videos of the same shape.

    Returns:
        ``{"psnr": mean dB, "ssim": mean, "psnr_per_frame": (T,), "ssim_per_frame": (T,)}``. The
        mean PSNR is ``inf`` only when every frame is identical; otherwise identical frames are
        left out of the mean (``num_identical`` counts them).
    """
    p = psnr_frames(generated, gt)
    s = ssim_frames(generated, gt)
    finite = p[np.isfinite(p)]
    mean_psnr = math.inf if finite.size == 0 else float(finite.mean())
    return {
        "psnr": mean_psnr,
        "ssim": float(s.mean()),
        "psnr_per_frame": p,
        "ssim_per_frame": s,
        "num_identical": int((~np.isfinite(p)).sum()),
    }
