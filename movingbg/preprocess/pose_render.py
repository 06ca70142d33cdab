"""Render poses as the DWPose / ControlNet-OpenPose skeleton image that pose guiders were trained on.

Our own implementation of the drawing convention used by ControlNet's OpenPose annotator and by
DWPose (and therefore by the pose guiders of AnimateAnyone, MimicMotion, UniAnimate, ...):

* black ``(H, W, 3)`` uint8 RGB canvas;
* body: the 17 OpenPose limbs (:data:`OPENPOSE_LIMBS`), each a filled ellipse (``cv2.ellipse2Poly``
  with half-axes ``(length / 2, 4)``, integer centre and angle, 1 degree steps) in the limb's colour
  times 0.6 (truncated), then the 18 joints as filled circles of radius 4 in the full joint colour
  (:data:`OPENPOSE_COLORS`, limb ``i`` uses colour ``i``);
* hands: the 20 hand edges as lines of thickness 2, edge ``i`` coloured ``hsv(i / 20, 1, 1)``, then
  the 21 joints as filled circles of radius 4 in ``(0, 0, 255)`` (blue on the RGB canvas);
* face: the 68 landmarks as filled white circles of radius 3.

All bodies are drawn first, then all hands, then all faces, as DWPose's ``draw_pose`` does.
Coordinates are truncated to integers like the reference code. Differences we accept: missing
points are decided by confidence (not by DWPose's "coordinate > 0.01 of the frame" test, which
also hid points on the top/left border), and feet are not drawn (the 18-point guiders never saw
them).
"""

from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import cv2
import numpy as np

from .pose_format import FramePose, PersonPose

logger = logging.getLogger(__name__)

__all__ = [
    "OPENPOSE_LIMBS",
    "OPENPOSE_COLORS",
    "HAND_EDGES",
    "HAND_JOINT_COLOR",
    "FACE_COLOR",
    "hsv_to_rgb",
    "hand_edge_colors",
    "render_pose",
    "render_poses",
]

OPENPOSE_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
"""The 17 OpenPose limbs as 0-based OpenPose-18 index pairs (neck-r-shoulder first)."""

OPENPOSE_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
"""RGB colour of joint ``i`` and of limb ``i`` (limbs use it times 0.6)."""

HAND_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)
"""The 20 hand edges (wrist = 0; thumb, index, middle, ring, little finger)."""

HAND_JOINT_COLOR = (0, 0, 255)
FACE_COLOR = (255, 255, 255)

_STICK_WIDTH = 4
_JOINT_RADIUS = 4
_HAND_THICKNESS = 2
_HAND_RADIUS = 4
_FACE_RADIUS = 3
_LIMB_DIM = 0.6
_MAX_ABS_COORD = 1e6  # beyond this cv2's fixed-point drawing overflows; such points are skipped


def hsv_to_rgb(h: float, s: float = 1.0, v: float = 1.0) -> tuple[float, float, float]:
    """HSV -> RGB, all in 0..1 (the standard sextant formula, same values as matplotlib's)."""
    h = float(h) % 1.0
    i = int(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]


def hand_edge_colors() -> tuple[tuple[float, float, float], ...]:
    """RGB colour (floats 0..255, as the reference passes them to OpenCV) of each hand edge."""
    n = len(HAND_EDGES)
    return tuple(tuple(255.0 * c for c in hsv_to_rgb(i / float(n), 1.0, 1.0)) for i in range(n))


_HAND_COLORS = hand_edge_colors()
_LIMB_COLORS = tuple(tuple(int(c * _LIMB_DIM) for c in col) for col in OPENPOSE_COLORS)


def _points(arr: Optional[np.ndarray], sx: float, sy: float, threshold: float):
    """``(xy float (K, 2) in canvas pixels, present bool (K,))`` for a part, or None."""
    if arr is None:
        return None
    xy = arr[:, :2].astype(np.float64) * (sx, sy)
    c = arr[:, 2]
    present = (c > 0) & (c >= threshold) & np.all(np.abs(xy) < _MAX_ABS_COORD, axis=1)
    return xy, present


def _draw_body(canvas: np.ndarray, person: PersonPose, sx: float, sy: float, threshold: float,
               limbs: bool) -> None:
    xy, present = _points(person.body, sx, sy, threshold)
    if limbs:
        for (a, b), color in zip(OPENPOSE_LIMBS, _LIMB_COLORS):
            if not (present[a] and present[b]):
                continue
            (x0, y0), (x1, y1) = xy[a], xy[b]
            length = math.hypot(x0 - x1, y0 - y1)
            angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
            centre = (int((x0 + x1) / 2.0), int((y0 + y1) / 2.0))
            poly = cv2.ellipse2Poly(centre, (int(length / 2.0), _STICK_WIDTH), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, poly, color)
    else:
        for j, color in enumerate(OPENPOSE_COLORS):
            if present[j]:
                cv2.circle(canvas, (int(xy[j, 0]), int(xy[j, 1])), _JOINT_RADIUS, color, thickness=-1)


def _draw_hand(canvas: np.ndarray, hand: Optional[np.ndarray], sx: float, sy: float, threshold: float) -> None:
    pts = _points(hand, sx, sy, threshold)
    if pts is None:
        return
    xy, present = pts
    ixy = xy.astype(np.int64)  # truncation toward zero, like int()
    for (a, b), color in zip(HAND_EDGES, _HAND_COLORS):
        if present[a] and present[b]:
            cv2.line(canvas, (int(ixy[a, 0]), int(ixy[a, 1])), (int(ixy[b, 0]), int(ixy[b, 1])), color,
                     thickness=_HAND_THICKNESS)
    for k in np.flatnonzero(present):
        cv2.circle(canvas, (int(ixy[k, 0]), int(ixy[k, 1])), _HAND_RADIUS, HAND_JOINT_COLOR, thickness=-1)


def _draw_face(canvas: np.ndarray, face: Optional[np.ndarray], sx: float, sy: float, threshold: float) -> None:
    pts = _points(face, sx, sy, threshold)
    if pts is None:
        return
    xy, present = pts
    for k in np.flatnonzero(present):
        cv2.circle(canvas, (int(xy[k, 0]), int(xy[k, 1])), _FACE_RADIUS, FACE_COLOR, thickness=-1)


def render_pose(frame: FramePose, width: Optional[int] = None, height: Optional[int] = None,
                draw_body: bool = True, draw_hands: bool = True, draw_face: bool = True, *,
                threshold: float = 0.0) -> np.ndarray:
    """Draw one frame's people as a DWPose/OpenPose skeleton image.

    Args:
        frame: the poses; coordinates in pixels of ``frame.width`` x ``frame.height``.
        width, height: output size; default the frame's canvas. When different, coordinates are
            scaled by ``width / frame.width`` and ``height / frame.height`` (stick widths and
            radii stay in output pixels, as the reference draws at the output resolution).
        draw_body, draw_hands, draw_face: which parts to draw.
        threshold: points with confidence ``< threshold`` are skipped, as are missing points
            (confidence 0) always.

    Returns:
        ``(H, W, 3)`` uint8 RGB image, black where nothing is drawn.
    """
    if not isinstance(frame, FramePose):
        raise ValueError(f"render_pose: frame must be a FramePose, got {type(frame).__name__}")
    w = frame.width if width is None else int(width)
    h = frame.height if height is None else int(height)
    if w <= 0 or h <= 0:
        raise ValueError(f"render_pose: output size must be positive, got {w}x{h}")
    sx, sy = w / float(frame.width), h / float(frame.height)
    canvas = np.zeros((h, w, 3), np.uint8)
    thr = float(threshold)
    if draw_body:
        for person in frame.people:
            _draw_body(canvas, person, sx, sy, thr, limbs=True)
        for person in frame.people:
            _draw_body(canvas, person, sx, sy, thr, limbs=False)
    if draw_hands:
        for person in frame.people:
            _draw_hand(canvas, person.left_hand, sx, sy, thr)
            _draw_hand(canvas, person.right_hand, sx, sy, thr)
    if draw_face:
        for person in frame.people:
            _draw_face(canvas, person.face, sx, sy, thr)
    return canvas


def render_poses(frames: Sequence[FramePose], width: Optional[int] = None, height: Optional[int] = None,
                 draw_body: bool = True, draw_hands: bool = True, draw_face: bool = True, *,
                 threshold: float = 0.0) -> np.ndarray:
    """Render a sequence with :func:`render_pose`.

    Args:
        frames: T frames. Without ``width``/``height`` they must share one canvas size.
        width, height, draw_body, draw_hands, draw_face, threshold: as :func:`render_pose`.

    Returns:
        ``(T, H, W, 3)`` uint8 RGB.
    """
    frames = list(frames)
    if not frames:
        raise ValueError("render_poses: no frames to render")
    w = frames[0].width if width is None else int(width)
    h = frames[0].height if height is None else int(height)
    sizes = {(f.width, f.height) for f in frames}
    if width is None and height is None and len(sizes) > 1:
        raise ValueError(f"render_poses: frames have different canvas sizes {sorted(sizes)}; "
                         "pass width and height")
    out = np.empty((len(frames), h, w, 3), np.uint8)
    for t, frame in enumerate(frames):
        out[t] = render_pose(frame, w, h, draw_body, draw_hands, draw_face, threshold=threshold)
    return out
