"""Rasterise background point tracks into the image sequence the background encoder reads.

The map is a black canvas with every visible track drawn as a filled disc in a FIXED colour per
track identity for the whole clip (so the encoder can follow each point by its colour), optionally
with a short fading trail of its previous positions. Drawing over the video frames instead gives a
preview. Images are RGB uint8.

Disc radius: by default ``max(2, round(min(H, W) / 128))`` px, i.e. 2 px up to 320 px frames,
4 px at 512, 6 px at 768: it scales with the frame (so the map looks the same at any resolution),
stays small enough that 50 points rarely overlap, and never drops below a 5 px wide disc. Pass
``radius`` to match whatever the background encoder was trained with. Discs are drawn without
anti-aliasing (every covered pixel has exactly the track's colour), at sub-pixel centres
(1/16 px); later tracks are drawn over earlier ones where they overlap.
"""

from __future__ import annotations

import logging
from typing import Optional

import cv2
import numpy as np

from ..types import Tracks

logger = logging.getLogger(__name__)

_SHIFT = 4
_SCALE = float(1 << _SHIFT)
_GOLDEN = 0.6180339887498949


def default_radius(width: int, height: int) -> int:
    """Default disc radius in px for a ``width`` x ``height`` frame: ``max(2, round(min(H, W) / 128))``."""
    return max(2, int(round(min(int(width), int(height)) / 128.0)))


def track_colors(n: int) -> np.ndarray:
    """Deterministic, bright, well separated colours, one per track index.

    Hue follows the golden-ratio sequence (neighbouring indices get very different hues);
    saturation in [0.75, 1] and value in [0.9, 1] vary with two other low-discrepancy sequences, so
    no colour is dark (every colour has a channel >= 229) and none is black.

    Args:
        n: number of colours, >= 0.

    Returns:
        ``(n, 3)`` uint8 RGB; colour ``i`` depends only on ``i`` (not on ``n``).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    i = np.arange(int(n), dtype=np.float64)
    h = np.mod(0.11 + i * _GOLDEN, 1.0)
    s = 0.75 + 0.25 * np.mod(0.5 + i * 0.7548776662466927, 1.0)
    v = 0.90 + 0.10 * np.mod(0.3 + i * 0.5698402909980532, 1.0)
    # HSV -> RGB
    k = np.mod(np.array([5.0, 3.0, 1.0])[None, :] + h[:, None] * 6.0, 6.0)
    rgb = v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def render_tracks(
    tracks: Tracks,
    *,
    radius: Optional[int] = None,
    trail: int = 0,
    background: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Draw tracks frame by frame.

    Args:
        tracks: the tracks (``T`` frames, ``N`` tracks, frame ``width`` x ``height``).
        radius: disc radius in px (>= 1); default :func:`default_radius`.
        trail: draw each visible track's last ``trail`` steps (>= 0) as a line fading towards
            black (step ``k`` back at ``1 - k / (trail + 1)`` of the colour), only between
            consecutive frames where the track is visible.
        background: optional ``(T, H, W, 3)`` uint8 RGB frames to draw over (a preview) instead of
            the black canvas; not modified.

    Returns:
        ``(T, H, W, 3)`` uint8 RGB. Track ``i`` always has colour ``track_colors(N)[i]``;
        invisible points are not drawn.
    """
    if not isinstance(tracks, Tracks):
        raise ValueError(f"tracks must be a movingbg.types.Tracks, got {type(tracks).__name__}")
    T, N, W, H = tracks.num_frames, tracks.num_tracks, tracks.width, tracks.height
    if radius is None:
        radius = default_radius(W, H)
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or int(radius) < 1:
        raise ValueError(f"radius must be an int >= 1 (px) or None, got {radius!r}")
    if isinstance(trail, bool) or not isinstance(trail, (int, np.integer)) or int(trail) < 0:
        raise ValueError(f"trail must be an int >= 0 (frames), got {trail!r}")
    radius, trail = int(radius), int(trail)
    if background is None:
        out = np.zeros((T, H, W, 3), dtype=np.uint8)
    else:
        bg = np.asarray(background)
        if bg.shape != (T, H, W, 3) or bg.dtype != np.uint8:
            raise ValueError(f"background must be ({T}, {H}, {W}, 3) uint8 RGB frames, got {bg.shape} {bg.dtype}")
        out = bg.copy()
    if N == 0:
        return out

    colors = track_colors(N).astype(np.int64)
    fixed = np.rint(np.nan_to_num(tracks.points, nan=-1e4) * _SCALE).clip(-(2**30), 2**30).astype(np.int64)
    vis = tracks.visible
    thickness = max(1, radius // 2)
    for t in range(T):
        img = out[t]
        for k in range(min(trail, t), 0, -1):  # oldest segment first
            fade = 1.0 - k / (trail + 1.0)
            a, b = t - k, t - k + 1
            for i in np.nonzero(vis[a] & vis[b])[0]:
                col = tuple(int(c) for c in np.rint(colors[i] * fade))
                p, q = fixed[a, i], fixed[b, i]
                cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), col, thickness, cv2.LINE_8, _SHIFT)
        for i in np.nonzero(vis[t])[0]:
            p = fixed[t, i]
            col = tuple(int(c) for c in colors[i])
            cv2.circle(img, (int(p[0]), int(p[1])), int(radius * _SCALE), col, -1, cv2.LINE_8, _SHIFT)
    return out
