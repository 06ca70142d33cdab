"""Synthetic background tracks for a chosen camera move ("direct the camera" without a driving video).

Every move is a per-frame 2x3 affine map of the image plane ``A_t`` taking a frame-0 scene point
``(x, y, 1)`` (pixels, ``x`` right, ``y`` down) to its frame-``t`` position; ``A_0`` is the identity.
Sign convention: the moves describe what the CAMERA does, the tracks show how the SCENE moves on
screen, which is the opposite for pans and tilts:

============  ===========================================================================
move          scene motion on screen, ``d = strength * ease(u)``, ``u = t / (T - 1)``
============  ===========================================================================
static        none: every frame has the same positions ("lock the camera")
pan_right     camera turns right, scene moves LEFT by ``d * width`` px
pan_left      camera turns left, scene moves RIGHT by ``d * width`` px
tilt_up       camera tilts up, scene moves DOWN by ``d * height`` px
tilt_down     camera tilts down, scene moves UP by ``d * height`` px
zoom_in       scene scales by ``1 + d`` about the frame centre (points move away from it)
zoom_out      scene scales by ``1 / (1 + d)`` about the frame centre (points move towards it)
orbit_right   camera circles right around the subject (yawing to keep it centred): the
              background behind the subject moves RIGHT, by ``d * width`` px at the top row
              (far) down to half that at the bottom row (near), a shear giving parallax
orbit_left    mirror image of orbit_right (background moves LEFT)
handheld      seeded, smooth band-limited shake: translation peaking at ``strength * width``
              (x) and ``strength * height`` (y), roll peaking at ``strength * 10`` degrees;
              ``easing`` is ignored
============  ===========================================================================

So ``strength`` is a fraction of the frame size over the whole clip (``0.25`` = a quarter of the
width for a pan, a 1.25x zoom), must be finite and >= 0, and ``strength = 0`` is a static camera.
"""

from __future__ import annotations

import logging
import math
from typing import Literal, Optional, get_args

import cv2
import numpy as np

from ..types import Tracks
from .tracks import sample_background_points

logger = logging.getLogger(__name__)

CameraMove = Literal[
    "static",
    "pan_left",
    "pan_right",
    "tilt_up",
    "tilt_down",
    "zoom_in",
    "zoom_out",
    "orbit_left",
    "orbit_right",
    "handheld",
]
Easing = Literal["linear", "ease_in", "ease_out", "ease_in_out"]

CAMERA_MOVES: tuple[str, ...] = get_args(CameraMove)
EASINGS: tuple[str, ...] = get_args(Easing)

_HANDHELD_ROLL_DEG = 10.0  # roll peak per unit strength
_REVEAL_REACH = 2.5  # fill_revealed seeds at most this many frame sizes beyond frame 0


def ease(u: np.ndarray, easing: str = "linear") -> np.ndarray:
    """Easing curve on ``u`` in [0, 1] -> [0, 1] with ``ease(0) = 0`` and ``ease(1) = 1``.

    ``linear``: ``u``; ``ease_in``: ``u**2``; ``ease_out``: ``1 - (1 - u)**2``;
    ``ease_in_out``: smoothstep ``3u**2 - 2u**3``.
    """
    if easing not in EASINGS:
        raise ValueError(f"easing must be one of {EASINGS}, got {easing!r}")
    u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
    if easing == "linear":
        return u
    if easing == "ease_in":
        return u * u
    if easing == "ease_out":
        return 1.0 - (1.0 - u) ** 2
    return u * u * (3.0 - 2.0 * u)


def _check_common(num_frames: int, width: int, height: int, move: str, strength: float) -> tuple[int, int, int, float]:
    for name, value, minimum in (("num_frames", num_frames, 1), ("width", width, 2), ("height", height, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if move not in CAMERA_MOVES:
        raise ValueError(f"move must be one of {CAMERA_MOVES}, got {move!r}")
    message = f"strength must be a finite number >= 0 (fraction of the frame size), got {strength!r}"
    try:
        s = float(strength)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not math.isfinite(s) or s < 0:
        raise ValueError(message)
    return int(num_frames), int(width), int(height), s


def _handheld_noise(rng: np.random.Generator, num_frames: int, channels: int) -> np.ndarray:
    """``(T, channels)`` smooth noise in [-1, 1], 0 at frame 0, peak |value| 1 per channel."""
    t = np.arange(num_frames, dtype=np.float64)[:, None]
    out = np.zeros((num_frames, channels))
    for _ in range(3):
        period = rng.uniform(8.0, 48.0, size=channels)  # frames per cycle: a slow sway to a jitter
        phase = rng.uniform(0.0, 2.0 * math.pi, size=channels)
        amp = rng.uniform(0.3, 1.0, size=channels)
        out += amp * np.sin(2.0 * math.pi * t / period + phase)
    out -= out[:1]
    peak = np.abs(out).max(axis=0)
    return np.where(peak > 0, out / np.where(peak > 0, peak, 1.0), 0.0)


def camera_transforms(
    num_frames: int,
    width: int,
    height: int,
    move: CameraMove,
    strength: float,
    easing: Easing = "linear",
    *,
    seed: int = 0,
) -> np.ndarray:
    """Per-frame affine maps of a camera move (see the module docstring for moves and units).

    Returns:
        ``(T, 2, 3)`` float64, ``A_t`` maps a frame-0 point ``(x, y, 1)`` to frame ``t``;
        ``A_0`` is the identity.
    """
    T, W, H, s = _check_common(num_frames, width, height, move, strength)
    if easing not in EASINGS:
        raise ValueError(f"easing must be one of {EASINGS}, got {easing!r}")
    u = np.arange(T, dtype=np.float64) / (T - 1) if T > 1 else np.zeros(1)
    d = s * ease(u, easing)
    cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
    A = np.zeros((T, 2, 3))
    A[:, 0, 0] = 1.0
    A[:, 1, 1] = 1.0
    if move == "pan_right":
        A[:, 0, 2] = -d * W
    elif move == "pan_left":
        A[:, 0, 2] = d * W
    elif move == "tilt_up":
        A[:, 1, 2] = d * H
    elif move == "tilt_down":
        A[:, 1, 2] = -d * H
    elif move in ("zoom_in", "zoom_out"):
        scale = 1.0 + d if move == "zoom_in" else 1.0 / (1.0 + d)
        A[:, 0, 0] = scale
        A[:, 1, 1] = scale
        A[:, 0, 2] = cx * (1.0 - scale)
        A[:, 1, 2] = cy * (1.0 - scale)
    elif move in ("orbit_left", "orbit_right"):
        # dx(y) = sign * d * W * (1 - 0.5 * y / (H - 1)): far (top) rows move twice as far as near
        dx = (1.0 if move == "orbit_right" else -1.0) * d * W
        A[:, 0, 1] = -0.5 * dx / (H - 1)
        A[:, 0, 2] = dx
    elif move == "handheld":
        noise = _handheld_noise(np.random.default_rng(int(seed)), T, 3)
        tx, ty = noise[:, 0] * s * W, noise[:, 1] * s * H
        roll = np.radians(noise[:, 2] * s * _HANDHELD_ROLL_DEG)
        c, sn = np.cos(roll), np.sin(roll)
        A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1] = c, -sn, sn, c
        A[:, 0, 2] = cx - (c * cx - sn * cy) + tx
        A[:, 1, 2] = cy - (sn * cx + c * cy) + ty
    A[0] = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return A


def _apply(A: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """``(T, 2, 3)`` affines on ``(N, 2)`` points -> ``(T, N, 2)``."""
    return np.einsum("tij,nj->tni", A[:, :, :2], pts) + A[:, None, :, 2]


def camera_tracks(
    num_frames: int,
    width: int,
    height: int,
    move: CameraMove,
    strength: float,
    easing: Easing = "linear",
    *,
    alpha: Optional[np.ndarray] = None,
    num_points: int = 50,
    min_distance: float = 12,
    seed: int = 0,
    fill_revealed: bool = True,
) -> Tracks:
    """Background tracks for a synthetic camera move (moves, sign convention and units: module docstring).

    About ``num_points`` points are seeded (at least ``min_distance`` px apart, randomly, with
    ``seed``) on the background of frame 0 (``alpha[0] < 0.5``; the whole frame without ``alpha``)
    and moved by :func:`camera_transforms`. With ``fill_revealed``, scene areas that come into view
    later (the far side of a pan, the border of a zoom out) get points at the same density, so the
    visible count stays near ``num_points`` instead of emptying out; these tracks are invisible
    until they enter the frame. A point is visible while it is inside the frame and, with
    ``alpha``, not on the person (M = (1 - alpha) * T). The visible count still follows the
    scene's scale: a zoom in pushes points out of the frame (fewer visible), a zoom out brings
    revealed points in (more visible). Revealed areas more than 2.5 frame sizes beyond frame 0
    (huge zoom-outs) are not seeded.

    Args:
        num_frames, width, height: clip size (``T >= 1``, each side >= 2 px).
        move: one of :data:`CAMERA_MOVES`.
        strength: finite, >= 0, fraction of the frame size over the clip (module docstring).
        easing: one of :data:`EASINGS` (ignored for ``static`` and ``handheld``).
        alpha: optional human matte in 0..1 (1 = person), ``(T, H, W)`` or ``(H, W)`` for all
            frames (e.g. the reference image's matte).
        num_points: target visible count, >= 0.
        min_distance: minimum seed spacing in px.
        seed: seeds the point placement and the handheld shake (deterministic).
        fill_revealed: also seed points in areas revealed after frame 0.

    Returns:
        :class:`Tracks` (``T`` frames; ``N`` ~ ``num_points``, more with ``fill_revealed``).
    """
    T, W, H, _ = _check_common(num_frames, width, height, move, strength)
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) or num_points < 0:
        raise ValueError(f"num_points must be an int >= 0, got {num_points!r}")
    A = camera_transforms(T, W, H, move, strength, easing, seed=seed)
    a = None
    if alpha is not None:
        a = np.asarray(alpha, dtype=np.float32)
        if a.shape == (H, W):
            a = np.broadcast_to(a, (T, H, W))
        elif a.shape != (T, H, W):
            raise ValueError(f"alpha must be ({T}, {H}, {W}) or ({H}, {W}) (a matte in 0..1), got {a.shape}")
    rng = np.random.default_rng(int(seed))

    # region to seed, in frame-0 coordinates: frame 0 (minus the person) plus, optionally, every
    # area a later frame shows
    x0 = y0 = 0
    canvas_w, canvas_h = W, H
    polys = []
    if fill_revealed and T > 1:
        corners = np.array([[0.0, 0.0], [W - 1.0, 0.0], [W - 1.0, H - 1.0], [0.0, H - 1.0]])
        inv = np.stack([cv2.invertAffineTransform(A[t]) for t in range(T)])
        polys = [c for c in _apply(inv, corners)]
        allc = np.concatenate(polys)
        # seed at most _REVEAL_REACH frame sizes beyond frame 0 (bounds memory for huge zoom-outs)
        x0 = int(max(-_REVEAL_REACH * W, min(0, math.floor(allc[:, 0].min()))))
        y0 = int(max(-_REVEAL_REACH * H, min(0, math.floor(allc[:, 1].min()))))
        x1 = int(min((1 + _REVEAL_REACH) * W, max(W - 1, math.ceil(allc[:, 0].max()))))
        y1 = int(min((1 + _REVEAL_REACH) * H, max(H - 1, math.ceil(allc[:, 1].max()))))
        canvas_w, canvas_h = x1 - x0 + 1, y1 - y0 + 1
    canvas = np.ones((canvas_h, canvas_w), dtype=np.float32)  # 1 = do not seed here
    for poly in polys:
        cv2.fillConvexPoly(canvas, np.rint(poly - [x0, y0]).astype(np.int32), 0.0)
    canvas[-y0 : -y0 + H, -x0 : -x0 + W] = 0.0 if a is None else a[0]
    bg_area = float((canvas < 0.5).sum())
    frame_bg = float((canvas[-y0 : -y0 + H, -x0 : -x0 + W] < 0.5).sum())
    count = int(round(num_points * bg_area / frame_bg)) if frame_bg > 0 else 0
    pts = sample_background_points(canvas, count, min_distance, border=2, rng=rng, margin=2)
    if len(pts) == 0:
        logger.warning("camera_tracks: no background to place points on; returning 0 tracks")
    pts = pts.astype(np.float64) + [x0, y0]
    positions = _apply(A, pts).astype(np.float32)  # (T, N, 2)
    tracks = Tracks(positions, np.ones(positions.shape[:2], dtype=bool), W, H)
    tracks = Tracks(tracks.points, tracks.in_frame(), W, H)
    if a is not None:
        tracks = tracks.masked(np.ascontiguousarray(a))
    logger.debug("camera_tracks %s strength=%.3f %s: %d tracks", move, float(strength), easing, tracks.num_tracks)
    return tracks
