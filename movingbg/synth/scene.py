"""Deterministic synthetic clip: textured background under a known camera motion plus a stick figure.

The background is a procedurally generated texture (multi-scale value noise plus hard-edged shapes,
so it has many strong corners to track) that is larger than the frame and is rendered into every
frame with ``cv2.warpAffine`` (bilinear). Frame ``t`` shows the frame-0 background moved by a known
similarity transform ``bg_transforms[t]`` (pan, zoom, rotation about the frame centre), so
ground-truth background tracks are exact (the texture is warped as float32, which OpenCV 5 samples
at exact sub-pixel positions; older OpenCV builds snap positions to a 1/32 px grid, an error of at
most 1/64 px that does not accumulate over frames).

The foreground "person" is drawn FROM ground-truth OpenPose-18 body keypoints (limbs as capsules
between joints, a torso polygon and a head ellipse) and composited with an anti-aliased alpha matte.

Coordinates are pixels with pixel centres at integer positions (``x`` right, ``y`` down), matching
:class:`movingbg.types.Tracks`. Images are RGB ``uint8``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Union

import cv2
import numpy as np

from ..types import Tracks

logger = logging.getLogger(__name__)

OPENPOSE18_NAMES: tuple[str, ...] = (
    "nose",
    "neck",
    "r_shoulder",
    "r_elbow",
    "r_wrist",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
    "r_hip",
    "r_knee",
    "r_ankle",
    "l_hip",
    "l_knee",
    "l_ankle",
    "r_eye",
    "l_eye",
    "r_ear",
    "l_ear",
)
"""Keypoint order of ``SynthClip.keypoints`` (OpenPose BODY-18 / COCO-18)."""

_SHIFT = 4  # cv2 drawing: coordinates carry 4 fractional bits
_SCALE = float(1 << _SHIFT)


@dataclass(frozen=True, eq=False)
class SynthClip:
    """A synthetic clip with exact ground truth.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB, the composited clip.
        alpha: ``(T, H, W)`` float32 in 0..1, the figure's matte (1 = person; all zeros when the clip
            was made with ``figure=False``).
        bg_transforms: ``(T, 2, 3)`` float64 affine maps taking a frame-0 background point
            ``(x, y, 1)`` to its frame-``t`` position; ``bg_transforms[0]`` is the identity.
        keypoints: ``(T, 18, 3)`` float32 ``(x, y, conf)`` in pixels, OpenPose-18 order
            (:data:`OPENPOSE18_NAMES`); ``conf`` is 1 for a keypoint inside the frame, else 0
            (all zeros when ``figure=False``).
        background: ``(T, H, W, 3)`` uint8 RGB, the background alone (the clip without the figure).
        seed: the seed the clip was generated from.
    """

    frames: np.ndarray
    alpha: np.ndarray
    bg_transforms: np.ndarray
    keypoints: np.ndarray
    background: np.ndarray
    seed: int

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


# --------------------------------------------------------------------------------------------
# camera


def _camera_transforms(
    num_frames: int, width: int, height: int, pan: tuple[float, float], zoom: float, rotation_deg: float
) -> np.ndarray:
    """``(T, 2, 3)`` float64: frame-0 -> frame-t similarity about the frame centre.

    ``p_t = c + s_t * R(theta_t) (p_0 - c) + t * pan`` with ``s_t = (1 + zoom) ** t`` and
    ``theta_t = t * rotation_deg`` (positive = clockwise on screen, since ``y`` points down).
    """
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    out = np.zeros((num_frames, 2, 3), dtype=np.float64)
    for t in range(num_frames):
        s = (1.0 + zoom) ** t
        th = math.radians(rotation_deg * t)
        a, b = s * math.cos(th), s * math.sin(th)
        lin = np.array([[a, -b], [b, a]])
        out[t, :, :2] = lin
        out[t, :, 2] = np.array([cx, cy]) + np.array(pan, dtype=np.float64) * t - lin @ np.array([cx, cy])
    out[0] = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return out


def _to3(a: np.ndarray) -> np.ndarray:
    """``(..., 2, 3)`` affine -> ``(..., 3, 3)`` homogeneous matrix."""
    out = np.zeros(a.shape[:-2] + (3, 3), dtype=np.float64)
    out[..., :2, :] = a
    out[..., 2, 2] = 1.0
    return out


def _apply(a: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine to ``(N, 2)`` points."""
    return pts @ a[:, :2].T + a[:, 2]


# --------------------------------------------------------------------------------------------
# background texture


def _make_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``(height, width, 3)`` uint8 RGB texture: multi-scale value noise plus hard-edged shapes."""
    img = np.zeros((height, width, 3), dtype=np.float32)
    for cell, weight in ((64, 0.40), (20, 0.30), (7, 0.20), (3, 0.10)):
        gh, gw = height // cell + 3, width // cell + 3
        grid = rng.random((gh, gw, 3), dtype=np.float32)
        up = cv2.resize(grid, (gw * cell, gh * cell), interpolation=cv2.INTER_CUBIC)
        img += weight * up[:height, :width]
    img = np.clip((img - 0.5) * 1.6 + 0.5, 0.0, 1.0) * 255.0
    tex = np.ascontiguousarray(img.astype(np.uint8))

    area = height * width
    n_shapes = max(8, area // 700)
    kinds = rng.integers(0, 4, size=n_shapes)
    centres = rng.random((n_shapes, 2)) * np.array([width, height])
    sizes = rng.uniform(3.0, 14.0, size=n_shapes)
    angles = rng.uniform(0.0, math.pi, size=n_shapes)
    colours = rng.integers(0, 256, size=(n_shapes, 3))
    for kind, (cx, cy), size, ang, col in zip(kinds, centres, sizes, angles, colours):
        colour = tuple(int(c) for c in col)
        if kind == 0:  # disc
            cv2.circle(tex, (int(cx), int(cy)), int(size), colour, -1, cv2.LINE_8)
        elif kind == 1:  # rotated rectangle
            ca, sa = math.cos(ang), math.sin(ang)
            hw, hh = size, size * 0.6
            corners = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
            rot = corners @ np.array([[ca, sa], [-sa, ca]]) + np.array([cx, cy])
            cv2.fillConvexPoly(tex, np.rint(rot).astype(np.int32), colour, cv2.LINE_8)
        elif kind == 2:  # triangle
            th = ang + np.array([0.0, 2.1, 4.2])
            tri = np.stack([cx + size * np.cos(th), cy + size * np.sin(th)], axis=1)
            cv2.fillConvexPoly(tex, np.rint(tri).astype(np.int32), colour, cv2.LINE_8)
        else:  # small checkerboard patch (very strong corners)
            x0, y0 = int(cx), int(cy)
            sq = max(2, int(size / 3))
            other = tuple(255 - c for c in colour)
            for i in range(3):
                for j in range(3):
                    c = colour if (i + j) % 2 == 0 else other
                    top_left = (x0 + i * sq, y0 + j * sq)
                    bottom_right = (x0 + (i + 1) * sq - 1, y0 + (j + 1) * sq - 1)
                    cv2.rectangle(tex, top_left, bottom_right, c, -1)
    # a little blur so that bilinear resampling (and sub-pixel tracking) behaves well
    return cv2.GaussianBlur(tex, (0, 0), 0.7)


# --------------------------------------------------------------------------------------------
# figure

# skeleton in body units (neck at the origin, y down); total height (head top to feet) ~0.95 units
_HEAD_OFFSETS = {
    "nose": (0.0, -0.085),
    "r_eye": (-0.028, -0.11),
    "l_eye": (0.028, -0.11),
    "r_ear": (-0.055, -0.10),
    "l_ear": (0.055, -0.10),
}
_SHOULDER = (0.10, 0.02)
_HIP = (0.065, 0.30)
_UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.16, 0.15, 0.22, 0.21


@dataclass(frozen=True)
class _FigureParams:
    direction: float
    phase: float
    period: float
    shirt: tuple[float, float, float]
    pants: tuple[float, float, float]
    skin: tuple[float, float, float]


def _figure_params(rng: np.random.Generator) -> _FigureParams:
    shirt = rng.uniform(40, 255, size=3)
    shirt[rng.integers(0, 3)] = rng.uniform(200, 255)
    pants = rng.uniform(20, 120, size=3)
    skin = np.array([224.0, 172.0, 140.0]) * rng.uniform(0.6, 1.05)
    return _FigureParams(
        direction=float(rng.choice([-1.0, 1.0])),
        phase=float(rng.uniform(0, 2 * math.pi)),
        period=float(rng.uniform(10.0, 16.0)),
        shirt=tuple(float(v) for v in shirt),
        pants=tuple(float(v) for v in pants),
        skin=tuple(float(np.clip(v, 0, 255)) for v in skin),
    )


def _figure_keypoints(t: int, num_frames: int, width: int, height: int, unit: float, fp: _FigureParams,
                      sway: float = 0.0, sway_period: float = 24.0) -> np.ndarray:
    """``(18, 2)`` float64 keypoints of the figure at frame ``t`` (OpenPose-18 order)."""
    u = t / (num_frames - 1) if num_frames > 1 else 0.0
    w = 2.0 * math.pi / fp.period
    swing = math.sin(w * t + fp.phase)
    if sway > 0:  # back and forth across the frame
        x = 0.5 + fp.direction * sway * math.sin(2.0 * math.pi * t / sway_period + fp.phase)
    else:  # one walk across 40 % of the frame over the clip
        x = 0.5 + fp.direction * 0.2 * (2.0 * u - 1.0)
    neck = np.array(
        [
            width * x,
            height / 2.0 - 0.275 * unit + 0.015 * height * math.sin(2.0 * w * t + fp.phase),
        ]
    )

    def limb(start: np.ndarray, angle_deg: float, length: float, side: float) -> np.ndarray:
        # angle measured from straight down, towards the body's outside (side=-1: image left)
        a = math.radians(angle_deg)
        return start + unit * length * np.array([side * math.sin(a), math.cos(a)])

    kp: dict[str, np.ndarray] = {"neck": neck}
    for name, (dx, dy) in _HEAD_OFFSETS.items():
        kp[name] = neck + unit * np.array([dx, dy])
    # the figure faces the camera: its right side is on the image left (side = -1)
    for prefix, side, sgn in (("r", -1.0, 1.0), ("l", 1.0, -1.0)):
        sh = neck + unit * np.array([side * _SHOULDER[0], _SHOULDER[1]])
        upper = 28.0 + 30.0 * sgn * swing
        el = limb(sh, upper, _UPPER_ARM, side)
        wr = limb(el, upper + 25.0 + 20.0 * sgn * swing, _FOREARM, side)
        hip = neck + unit * np.array([side * _HIP[0], _HIP[1]])
        thigh = 8.0 + 14.0 * sgn * swing
        kn = limb(hip, thigh, _THIGH, side)
        an = limb(kn, thigh - 8.0 - 6.0 * sgn * swing, _SHIN, side)
        kp.update({f"{prefix}_shoulder": sh, f"{prefix}_elbow": el, f"{prefix}_wrist": wr})
        kp.update({f"{prefix}_hip": hip, f"{prefix}_knee": kn, f"{prefix}_ankle": an})
    return np.stack([kp[n] for n in OPENPOSE18_NAMES])


def _fx(p: np.ndarray) -> tuple[int, int]:
    """A point as cv2 fixed-point coordinates (``_SHIFT`` fractional bits)."""
    return int(round(p[0] * _SCALE)), int(round(p[1] * _SCALE))


def _render_figure(
    kp: np.ndarray, height: int, width: int, unit: float, fp: _FigureParams
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the figure from its keypoints.

    Returns:
        ``(premultiplied colour (H, W, 3) float32 in 0..255, alpha (H, W) float32 in 0..1)``.
    """
    k = {n: kp[i] for i, n in enumerate(OPENPOSE18_NAMES)}

    def th(units: float) -> int:
        return max(1, int(round(units * unit)))

    def capsules(canvas: np.ndarray, pairs: list[tuple[str, str]], thickness: int) -> None:
        for a, b in pairs:
            cv2.line(canvas, _fx(k[a]), _fx(k[b]), 255, thickness, cv2.LINE_AA, _SHIFT)

    groups: list[tuple[tuple[float, float, float], np.ndarray]] = []
    # legs (pants), back to front
    legs = np.zeros((height, width), dtype=np.uint8)
    capsules(legs, [("r_hip", "r_knee"), ("l_hip", "l_knee")], th(0.075))
    capsules(legs, [("r_knee", "r_ankle"), ("l_knee", "l_ankle")], th(0.06))
    groups.append((fp.pants, legs))
    # torso and upper arms (shirt)
    shirt = np.zeros((height, width), dtype=np.uint8)
    torso = np.stack([k["r_shoulder"], k["l_shoulder"], k["l_hip"], k["r_hip"]])
    cv2.fillConvexPoly(shirt, np.rint(torso * _SCALE).astype(np.int32), 255, cv2.LINE_AA, _SHIFT)
    capsules(shirt, [("r_shoulder", "l_shoulder"), ("r_hip", "l_hip")], th(0.05))
    capsules(shirt, [("r_shoulder", "r_elbow"), ("l_shoulder", "l_elbow")], th(0.055))
    groups.append((fp.shirt, shirt))
    # forearms, neck and head (skin)
    skin = np.zeros((height, width), dtype=np.uint8)
    capsules(skin, [("r_elbow", "r_wrist"), ("l_elbow", "l_wrist")], th(0.045))
    head_c = (k["r_ear"] + k["l_ear"]) / 2.0 + unit * np.array([0.0, -0.005])
    capsules(skin, [("neck", "nose")], th(0.045))
    axes = (int(round(0.065 * unit * _SCALE)), int(round(0.085 * unit * _SCALE)))
    cv2.ellipse(skin, _fx(head_c), axes, 0.0, 0.0, 360.0, 255, -1, cv2.LINE_AA, _SHIFT)
    groups.append((fp.skin, skin))

    colour = np.zeros((height, width, 3), dtype=np.float32)
    alpha = np.zeros((height, width), dtype=np.float32)
    for rgb, cov in groups:
        m = cov.astype(np.float32) * (1.0 / 255.0)
        colour *= (1.0 - m)[..., None]
        colour += m[..., None] * np.asarray(rgb, dtype=np.float32)
        alpha = alpha * (1.0 - m) + m
    return colour, alpha


# --------------------------------------------------------------------------------------------
# public API


def make_clip(
    seed: int = 0,
    num_frames: int = 16,
    width: int = 128,
    height: int = 96,
    pan: tuple[float, float] = (1.5, 0.5),
    zoom: float = 0.01,
    rotation_deg: float = 0.0,
    figure: bool = True,
    *,
    figure_height: float = 0.7,
    sway: float = 0.0,
    sway_period: float = 24.0,
) -> SynthClip:
    """Generate a deterministic synthetic clip.

    The background moves by ``p_t = c + s_t R(theta_t) (p_0 - c) + t * pan`` where ``c`` is the
    frame centre, ``s_t = (1 + zoom) ** t`` and ``theta_t = t * rotation_deg``.

    Args:
        seed: RNG seed; the same arguments always give the same clip (bit for bit).
        num_frames: ``T >= 1``.
        width, height: frame size in pixels (each >= 8).
        pan: background content translation in pixels per frame ``(dx, dy)`` (positive ``dx``
            moves the scene right on screen, i.e. the camera pans left).
        zoom: relative scale change per frame (``0.01`` = the scene grows 1 % per frame, a zoom
            in); must be > -1.
        rotation_deg: scene rotation per frame in degrees about the frame centre (positive =
            clockwise on screen).
        figure: draw the foreground figure (else ``alpha`` is all zeros and ``keypoints`` all 0).
        figure_height: figure height (head top to feet) as a fraction of ``height``, in (0, 1.5].
        sway: 0 = the figure walks once across 40 % of the frame over the clip (however long); > 0 =
            it walks back and forth, ``x = W (0.5 +- sway sin(2 pi t / sway_period + phase))``, so its
            speed in px/frame does not depend on the clip length (fraction of the width, < 0.5).
        sway_period: frames per back-and-forth (``sway > 0``), >= 2.

    Returns:
        :class:`SynthClip`.
    """
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if int(width) < 8 or int(height) < 8:
        raise ValueError(f"width and height must be >= 8, got width={width}, height={height}")
    if len(tuple(pan)) != 2 or not all(math.isfinite(float(v)) for v in pan):
        raise ValueError(f"pan must be two finite numbers (dx, dy) in px/frame, got {pan!r}")
    if not math.isfinite(float(zoom)) or float(zoom) <= -1.0:
        raise ValueError(f"zoom must be a finite number > -1 (relative scale change per frame), got {zoom}")
    if not math.isfinite(float(rotation_deg)):
        raise ValueError(f"rotation_deg must be finite, got {rotation_deg}")
    if not 0.0 < float(figure_height) <= 1.5:
        raise ValueError(f"figure_height must be in (0, 1.5] (fraction of the frame height), got {figure_height}")
    if not (math.isfinite(float(sway)) and 0.0 <= float(sway) < 0.5):
        raise ValueError(f"sway must be in [0, 0.5) (fraction of the frame width), got {sway}")
    if not (math.isfinite(float(sway_period)) and float(sway_period) >= 2.0):
        raise ValueError(f"sway_period must be >= 2 frames, got {sway_period}")
    T, W, H = int(num_frames), int(width), int(height)
    pan_f = (float(pan[0]), float(pan[1]))
    rng = np.random.default_rng(int(seed))
    fp = _figure_params(rng)  # drawn first: the figure does not depend on the camera arguments

    transforms = _camera_transforms(T, W, H, pan_f, float(zoom), float(rotation_deg))

    # background region (in frame-0 coordinates) that any frame sees, plus a margin
    corners = np.array([[0.0, 0.0], [W - 1.0, 0.0], [W - 1.0, H - 1.0], [0.0, H - 1.0]])
    inv = np.linalg.inv(_to3(transforms))
    seen = np.concatenate([_apply(inv[t, :2], corners) for t in range(T)])
    margin = 4.0
    x0, y0 = np.floor(seen.min(axis=0) - margin)
    x1, y1 = np.ceil(seen.max(axis=0) + margin)
    # float32 texture: OpenCV (5) samples float images at exact sub-pixel positions, uint8 ones on a
    # 1/32 px grid
    tex = _make_texture(rng, int(y1 - y0) + 1, int(x1 - x0) + 1).astype(np.float32)
    to_tex = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])  # frame-0 -> texture

    frames = np.empty((T, H, W, 3), dtype=np.uint8)
    background = np.empty((T, H, W, 3), dtype=np.uint8)
    alpha = np.zeros((T, H, W), dtype=np.float32)
    keypoints = np.zeros((T, 18, 3), dtype=np.float32)
    unit = float(figure_height) * H / 0.95
    for t in range(T):
        frame_to_tex = (to_tex @ inv[t])[:2]  # destination (frame t) -> source (texture)
        warped = cv2.warpAffine(
            tex, frame_to_tex, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT101
        )
        bg = np.clip(np.rint(warped), 0, 255).astype(np.uint8)
        background[t] = bg
        if not figure:
            frames[t] = bg
            continue
        kp = _figure_keypoints(t, T, W, H, unit, fp, float(sway), float(sway_period))
        colour, a = _render_figure(kp, H, W, unit, fp)
        comp = bg.astype(np.float32) * (1.0 - a)[..., None] + colour
        frames[t] = np.clip(np.rint(comp), 0, 255).astype(np.uint8)
        alpha[t] = a
        inside = (kp[:, 0] >= 0) & (kp[:, 0] <= W - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= H - 1)
        keypoints[t, :, :2] = kp
        keypoints[t, :, 2] = inside.astype(np.float32)
    logger.debug("synthetic clip seed=%d %dx%d T=%d texture %s", seed, W, H, T, tex.shape)
    return SynthClip(frames, alpha, transforms, keypoints, background, int(seed))


def gt_background_tracks(
    clip: SynthClip, points: np.ndarray, *, from_frame: Union[int, np.ndarray] = 0
) -> np.ndarray:
    """Exact background trajectories of given points.

    Args:
        clip: the clip.
        points: ``(N, 2)`` ``x, y`` pixel positions in frame ``from_frame``.
        from_frame: frame the points are given in: one int for all points, or ``(N,)`` ints
            (e.g. the birth frame of each track).

    Returns:
        ``(T, N, 2)`` float64 positions in every frame (also outside the frame or on the person:
        the background point's position, ignoring occlusion).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be (N, 2) x, y pixel positions, got shape {pts.shape}")
    T = clip.num_frames
    src = np.broadcast_to(np.asarray(from_frame, dtype=np.int64), (pts.shape[0],))
    if src.size and (src.min() < 0 or src.max() >= T):
        raise ValueError(f"from_frame must be in [0, {T - 1}], got range [{src.min()}, {src.max()}]")
    inv = np.linalg.inv(_to3(clip.bg_transforms))  # (T, 3, 3) frame t -> frame 0
    homog = np.concatenate([pts, np.ones((pts.shape[0], 1))], axis=1)  # (N, 3)
    p0 = np.einsum("nij,nj->ni", inv[src], homog)  # (N, 3) in frame-0 coordinates
    return np.einsum("tij,nj->tni", clip.bg_transforms, p0)


def gt_tracks(
    clip: SynthClip,
    points: np.ndarray,
    *,
    from_frame: Union[int, np.ndarray] = 0,
    threshold: float = 0.5,
) -> Tracks:
    """Ground-truth :class:`Tracks` for given background points, masked with the clip's matte.

    A point is visible from ``from_frame`` on while it is inside the frame and not on the person
    (alpha < ``threshold``), as in M = (1 - alpha) * T. Arguments are as in
    :func:`gt_background_tracks`.
    """
    pos = gt_background_tracks(clip, points, from_frame=from_frame)
    src = np.broadcast_to(np.asarray(from_frame, dtype=np.int64), (pos.shape[1],))
    visible = np.arange(clip.num_frames)[:, None] >= src[None, :]
    return Tracks(pos.astype(np.float32), visible, clip.width, clip.height).masked(clip.alpha, threshold)
