"""Pose payloads (OpenPose-18 body + face + hands + feet) and the community ``POSE_KEYPOINT`` format.

Our payload
-----------
:class:`PersonPose` holds one person's keypoints as ``(K, 3)`` float32 arrays of ``x, y, conf``
in PIXELS of the frame they were estimated on (``x`` = column, ``y`` = row). ``conf == 0`` means
"missing" and such rows are all zeros. :class:`FramePose` is one frame: canvas size plus people.

Body keypoints use the OpenPose-18 order (:data:`OPENPOSE18_NAMES`)::

    0 nose, 1 neck, 2 r-shoulder, 3 r-elbow, 4 r-wrist, 5 l-shoulder, 6 l-elbow, 7 l-wrist,
    8 r-hip, 9 r-knee, 10 r-ankle, 11 l-hip, 12 l-knee, 13 l-ankle, 14 r-eye, 15 l-eye,
    16 r-ear, 17 l-ear

(``r``/``l`` are the person's own right/left.) The face is the 68-point iBUG layout, hands are
the 21-point OpenPose/COCO-WholeBody hand layout (wrist first), and the optional feet are the six
COCO-WholeBody foot points (l-big-toe, l-small-toe, l-heel, r-big-toe, r-small-toe, r-heel).

POSE_KEYPOINT
-------------
``POSE_KEYPOINT`` is the ComfyUI socket type emitted by comfyui_controlnet_aux's DWPose and
OpenPose preprocessors: a list with one OpenPose-JSON dict per frame::

    {"people": [{"pose_keypoints_2d": [x, y, c] * 18,
                 "face_keypoints_2d": [x, y, c] * 70 or None,
                 "hand_left_keypoints_2d": [x, y, c] * 21 or None,
                 "hand_right_keypoints_2d": [x, y, c] * 21 or None}],
     "canvas_width": W, "canvas_height": H}

Coordinate convention (read from comfyui_controlnet_aux, ``src/custom_controlnet_aux/dwpose/
__init__.py`` ``encode_poses_as_dict`` and ``dwpose/wholebody.py``): the DWPose node writes
keypoints in PIXELS of the canvas (the input image, not resized), confidence ``1.0`` for a
present point and ``0, 0, 0`` for a missing one; its 70 face points are the 68 landmarks followed
by the body's right and left eye; a part with no point at all is ``None``. Its decoder
(``decode_json_as_poses``) treats any confidence below 1.0 as missing. The OpenPose node of the same
pack (``open_pose/__init__.py``) instead writes coordinates NORMALISED to 0..1. We therefore write
pixels with confidence 1.0 by default, and the parser accepts both conventions.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "OPENPOSE18_NAMES",
    "COCO_TO_OPENPOSE18",
    "NUM_BODY",
    "NUM_FACE",
    "NUM_HAND",
    "NUM_FEET",
    "PersonPose",
    "FramePose",
    "from_wholebody",
    "to_pose_keypoint",
    "from_pose_keypoint",
]

NUM_BODY = 18
NUM_FACE = 68
NUM_HAND = 21
NUM_FEET = 6
NUM_WHOLEBODY = 133

OPENPOSE18_NAMES: tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)

COCO_TO_OPENPOSE18: tuple[Optional[int], ...] = (
    0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3,
)
"""For each OpenPose-18 index, the COCO-17 body index it comes from (``None``: the neck, which
COCO lacks and which is the mean of the two shoulders)."""

_COCO_L_SHOULDER, _COCO_R_SHOULDER = 5, 6
_WB_FEET = slice(17, 23)
_WB_FACE = slice(23, 91)
_WB_LEFT_HAND = slice(91, 112)
_WB_RIGHT_HAND = slice(112, 133)

# BODY_25 (OpenPose's default model) -> OpenPose-18, and its six foot points (same order as ours).
_BODY25_TO_18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
_BODY25_FEET = (19, 20, 21, 22, 23, 24)

_PART_SIZES = {"body": NUM_BODY, "face": NUM_FACE, "left_hand": NUM_HAND, "right_hand": NUM_HAND,
               "feet": NUM_FEET}


def _clean_points(value: Any, n: int, name: str) -> np.ndarray:
    """Validated, read-only ``(n, 3)`` float32 copy; missing rows (conf <= 0 or non-finite) zeroed."""
    arr = np.array(value, dtype=np.float32, copy=True)
    if arr.shape != (n, 3):
        raise ValueError(f"PersonPose.{name} must be ({n}, 3) x, y, conf, got shape {arr.shape}")
    bad = ~np.all(np.isfinite(arr), axis=1) | ~(arr[:, 2] > 0)
    arr[bad] = 0.0
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class PersonPose:
    """One person's 2-D keypoints.

    Attributes:
        body: ``(18, 3)`` float32 ``x, y, conf``, OpenPose-18 order, pixels; conf 0 = missing.
        face: ``(68, 3)`` or None (no face point found).
        left_hand: ``(21, 3)`` or None. The person's own left hand.
        right_hand: ``(21, 3)`` or None.
        feet: ``(6, 3)`` or None (l-big-toe, l-small-toe, l-heel, r-big-toe, r-small-toe, r-heel).

    Arrays are copied, cast to float32 and made read-only; rows that are missing (conf <= 0 or a
    non-finite value) are set to ``0, 0, 0``. Confidences are kept as given (DWPose's SimCC scores
    are roughly 0..1 but may exceed 1).
    """

    body: np.ndarray
    face: Optional[np.ndarray] = None
    left_hand: Optional[np.ndarray] = None
    right_hand: Optional[np.ndarray] = None
    feet: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        for name, n in _PART_SIZES.items():
            value = getattr(self, name)
            if value is None:
                if name == "body":
                    raise ValueError("PersonPose.body is required ((18, 3) x, y, conf)")
                continue
            object.__setattr__(self, name, _clean_points(value, n, name))

    @classmethod
    def empty(cls) -> "PersonPose":
        """A person with every body point missing and no face, hands or feet."""
        return cls(np.zeros((NUM_BODY, 3), np.float32))

    def parts(self) -> dict[str, Optional[np.ndarray]]:
        """``{"body", "face", "left_hand", "right_hand", "feet"}`` -> array or None."""
        return {name: getattr(self, name) for name in _PART_SIZES}

    @property
    def score(self) -> float:
        """Mean confidence of the present body points (0.0 when none is present)."""
        c = self.body[:, 2]
        present = c > 0
        return float(c[present].mean()) if present.any() else 0.0

    def replace(self, **parts: Optional[np.ndarray]) -> "PersonPose":
        """Copy with some parts replaced (``body=..., face=None, ...``)."""
        kwargs = self.parts()
        unknown = set(parts) - set(kwargs)
        if unknown:
            raise TypeError(f"unknown PersonPose parts: {sorted(unknown)}")
        kwargs.update(parts)
        return PersonPose(**kwargs)


@dataclass(frozen=True, eq=False)
class FramePose:
    """The people found in one frame.

    Attributes:
        width, height: canvas (frame) size in pixels the coordinates refer to.
        people: tuple of :class:`PersonPose`, most confident first when produced by DWPose.
    """

    width: int
    height: int
    people: tuple[PersonPose, ...] = ()

    def __post_init__(self) -> None:
        try:
            w, h = int(self.width), int(self.height)
        except (TypeError, ValueError):
            raise ValueError(f"FramePose size must be integers, got {self.width!r} x {self.height!r}") from None
        if w <= 0 or h <= 0:
            raise ValueError(f"FramePose size must be positive, got {w}x{h}")
        people = tuple(self.people)
        for p in people:
            if not isinstance(p, PersonPose):
                raise ValueError(f"FramePose.people must hold PersonPose objects, got {type(p).__name__}")
        object.__setattr__(self, "width", w)
        object.__setattr__(self, "height", h)
        object.__setattr__(self, "people", people)


# --------------------------------------------------------------------------------------------
# COCO-WholeBody (DWPose output) -> FramePose
# --------------------------------------------------------------------------------------------

def _part_or_none(xy: np.ndarray, sc: np.ndarray, keep: np.ndarray) -> Optional[np.ndarray]:
    if not keep.any():
        return None
    out = np.zeros((xy.shape[0], 3), np.float32)
    out[keep, :2] = xy[keep]
    out[keep, 2] = sc[keep]
    return out


def from_wholebody(keypoints: np.ndarray, scores: np.ndarray, width: int, height: int,
                   score_threshold: float = 0.3) -> FramePose:
    """Convert COCO-WholeBody (133-point) predictions to a :class:`FramePose`.

    Args:
        keypoints: ``(P, 133, 2)`` ``x, y`` in pixels of the ``width`` x ``height`` frame (a single
            ``(133, 2)`` person is accepted too). Order: 0-16 COCO body, 17-22 feet, 23-90 face,
            91-111 left hand, 112-132 right hand.
        scores: ``(P, 133)`` keypoint confidences (SimCC maxima, about 0..1).
        width, height: frame size.
        score_threshold: a point is present when its score is ``>= score_threshold`` (and > 0);
            others become ``0, 0, 0``.

    Returns:
        FramePose with one PersonPose per input person, in input order. The body is remapped to
        OpenPose-18; the neck is the mean of the shoulders (position and score) when both are
        present, as DWPose does, else missing. Face / hands / feet are None when none of their
        points is present.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    sc = np.asarray(scores, dtype=np.float32)
    if kp.ndim == 2:
        kp, sc = kp[None], sc[None] if sc.ndim == 1 else sc
    if kp.ndim != 3 or kp.shape[1:] != (NUM_WHOLEBODY, 2):
        raise ValueError(f"keypoints must be (P, 133, 2) COCO-WholeBody x, y, got {kp.shape}")
    if sc.shape != kp.shape[:2]:
        raise ValueError(f"scores must be {kp.shape[:2]} (P, 133), got {sc.shape}")
    thr = float(score_threshold)
    people = []
    for xy, s in zip(kp, sc):
        finite = np.all(np.isfinite(xy), axis=1) & np.isfinite(s)
        keep = finite & (s >= thr) & (s > 0)
        body = np.zeros((NUM_BODY, 3), np.float32)
        for op_idx, coco_idx in enumerate(COCO_TO_OPENPOSE18):
            if coco_idx is not None and keep[coco_idx]:
                body[op_idx] = (xy[coco_idx, 0], xy[coco_idx, 1], s[coco_idx])
        if keep[_COCO_L_SHOULDER] and keep[_COCO_R_SHOULDER]:
            sh = [_COCO_L_SHOULDER, _COCO_R_SHOULDER]
            body[1, :2] = xy[sh].mean(axis=0)
            body[1, 2] = s[sh].mean()
        people.append(PersonPose(
            body=body,
            face=_part_or_none(xy[_WB_FACE], s[_WB_FACE], keep[_WB_FACE]),
            left_hand=_part_or_none(xy[_WB_LEFT_HAND], s[_WB_LEFT_HAND], keep[_WB_LEFT_HAND]),
            right_hand=_part_or_none(xy[_WB_RIGHT_HAND], s[_WB_RIGHT_HAND], keep[_WB_RIGHT_HAND]),
            feet=_part_or_none(xy[_WB_FEET], s[_WB_FEET], keep[_WB_FEET]),
        ))
    return FramePose(int(width), int(height), tuple(people))


# --------------------------------------------------------------------------------------------
# FramePose <-> POSE_KEYPOINT
# --------------------------------------------------------------------------------------------

def _flatten(points: Optional[np.ndarray], keep_scores: bool) -> Optional[list[float]]:
    if points is None:
        return None
    out: list[float] = []
    for x, y, c in points.tolist():
        if c > 0:
            out.extend((float(x), float(y), float(c) if keep_scores else 1.0))
        else:
            out.extend((0.0, 0.0, 0.0))
    return out


def to_pose_keypoint(frames: Sequence[FramePose], *, keep_scores: bool = False,
                     include_feet: bool = False) -> list[dict]:
    """Encode frames as ``POSE_KEYPOINT`` (comfyui_controlnet_aux's DWPose-node layout).

    Args:
        frames: the frames, in order.
        keep_scores: write the real confidences instead of ``1.0`` for present points. Off by
            default because comfyui_controlnet_aux's decoder drops every point whose confidence is
            below 1.0.
        include_feet: also write our six foot points under the non-standard key
            ``"foot_keypoints_2d"`` (ignored by other consumers; read back by
            :func:`from_pose_keypoint`).

    Returns:
        One JSON-serialisable dict per frame: ``people`` (each with flat ``pose_keypoints_2d``
        (54 numbers), ``face_keypoints_2d`` (210 numbers: 68 landmarks + right eye + left eye, or
        None), ``hand_left_keypoints_2d`` / ``hand_right_keypoints_2d`` (63 numbers or None)),
        ``canvas_width`` and ``canvas_height``. Coordinates are pixels; missing points are
        ``0, 0, 0``.
    """
    out = []
    for i, frame in enumerate(frames):
        if not isinstance(frame, FramePose):
            raise ValueError(f"to_pose_keypoint: frames[{i}] must be a FramePose, got {type(frame).__name__}")
        people = []
        for person in frame.people:
            face = None
            if person.face is not None:
                face = np.concatenate([person.face, person.body[[14, 15]]], axis=0)
            entry = {
                "pose_keypoints_2d": _flatten(person.body, keep_scores),
                "face_keypoints_2d": _flatten(face, keep_scores),
                "hand_left_keypoints_2d": _flatten(person.left_hand, keep_scores),
                "hand_right_keypoints_2d": _flatten(person.right_hand, keep_scores),
            }
            if include_feet:
                entry["foot_keypoints_2d"] = _flatten(person.feet, keep_scores)
            people.append(entry)
        out.append({"people": people, "canvas_width": frame.width, "canvas_height": frame.height})
    return out


_EXPECTED = (
    "a list with one dict per frame, each {'people': [{'pose_keypoints_2d': [x, y, c, ...], "
    "'face_keypoints_2d': ..., 'hand_left_keypoints_2d': ..., 'hand_right_keypoints_2d': ...}], "
    "'canvas_width': int, 'canvas_height': int} (comfyui_controlnet_aux OpenPose/DWPose output)"
)

_PERSON_KEYS = (
    ("pose_keypoints_2d", "body", (NUM_BODY, 25)),
    ("face_keypoints_2d", "face", (NUM_FACE, 70)),
    ("hand_left_keypoints_2d", "left_hand", (NUM_HAND,)),
    ("hand_right_keypoints_2d", "right_hand", (NUM_HAND,)),
    ("foot_keypoints_2d", "feet", (NUM_FEET,)),
)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _parse_part(value: Any, where: str, counts: tuple[int, ...]) -> Optional[np.ndarray]:
    """Flat (or nested ``[[x, y, c], ...]``) number list -> ``(n, 3)`` float64, or None when absent."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: expected a flat list of x, y, confidence numbers or null, "
                         f"got {type(value).__name__}")
    if len(value) == 0:
        return None
    if all(isinstance(v, (list, tuple)) for v in value):
        if not all(len(v) == 3 for v in value):
            raise ValueError(f"{where}: expected [x, y, confidence] triples")
        value = [c for v in value for c in v]
    if not all(_is_number(v) for v in value):
        raise ValueError(f"{where}: expected numbers only (x, y, confidence triples)")
    arr = np.asarray(value, dtype=np.float64)
    wanted = " or ".join(f"{n} points ({3 * n} numbers)" for n in counts)
    if arr.size % 3 != 0 or arr.size // 3 not in counts:
        raise ValueError(f"{where}: expected {wanted}, got {arr.size} numbers")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: contains NaN or infinite values")
    return arr.reshape(-1, 3)


def _positive_int(value: Any, where: str) -> int:
    if not _is_number(value) or not math.isfinite(float(value)) or float(value) != int(value) or int(value) <= 0:
        raise ValueError(f"{where}: expected a positive integer canvas size, got {value!r}")
    return int(value)


def from_pose_keypoint(data: Any, *, normalized: Optional[bool] = None) -> list[FramePose]:
    """Decode ``POSE_KEYPOINT`` data (see the module docstring) into frames.

    Args:
        data: a list of per-frame dicts, a single dict, or a JSON string of either. Per person,
            ``pose_keypoints_2d`` may hold 18 (OpenPose-18) or 25 (OpenPose BODY_25: its feet
            become ``feet``) points, ``face_keypoints_2d`` 68 or 70 points (the last two, pupils or
            eyes, are dropped), hands 21 points; a part may be missing, None or empty. Nested
            ``[[x, y, c], ...]`` lists are accepted too. A point is present when its confidence is
            > 0 (its confidence is kept as given).
        normalized: whether coordinates are fractions of the canvas (comfyui_controlnet_aux's
            OpenPose node) rather than pixels (its DWPose node). ``None`` (default) detects it over
            the whole sequence: normalised when every present coordinate is within [0, 1].

    Returns:
        One :class:`FramePose` per frame, coordinates in pixels of its canvas.

    Raises:
        ValueError: malformed input; the message names ``pose_keypoint[...]`` and what was expected.
    """
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"pose_keypoint: not valid JSON ({exc}); expected {_EXPECTED}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, (list, tuple)):
        raise ValueError(f"pose_keypoint: expected {_EXPECTED}, got {type(data).__name__}")

    parsed: list[tuple[int, int, list[dict[str, Optional[np.ndarray]]]]] = []
    for i, frame in enumerate(data):
        where = f"pose_keypoint[{i}]"
        if not isinstance(frame, dict):
            raise ValueError(f"{where}: expected a dict with 'people', 'canvas_width', 'canvas_height', "
                             f"got {type(frame).__name__}")
        for key in ("canvas_width", "canvas_height"):
            if key not in frame:
                raise ValueError(f"{where}: missing '{key}'; expected {_EXPECTED}")
        w = _positive_int(frame["canvas_width"], f"{where}['canvas_width']")
        h = _positive_int(frame["canvas_height"], f"{where}['canvas_height']")
        people_in = frame.get("people") or []
        if not isinstance(people_in, (list, tuple)):
            raise ValueError(f"{where}['people']: expected a list of person dicts, got {type(people_in).__name__}")
        people = []
        for j, person in enumerate(people_in):
            pwhere = f"{where}['people'][{j}]"
            if not isinstance(person, dict):
                raise ValueError(f"{pwhere}: expected a dict with 'pose_keypoints_2d' etc., got "
                                 f"{type(person).__name__}")
            parts: dict[str, Optional[np.ndarray]] = {}
            for key, name, counts in _PERSON_KEYS:
                arr = _parse_part(person.get(key), f"{pwhere}['{key}']", counts)
                if name == "body" and arr is not None and arr.shape[0] == 25:
                    if parts.get("feet") is None:
                        parts["feet"] = arr[list(_BODY25_FEET)]
                    arr = arr[list(_BODY25_TO_18)]
                if name == "face" and arr is not None:
                    arr = arr[:NUM_FACE]
                if name == "feet" and arr is None and parts.get("feet") is not None:
                    continue
                parts[name] = arr
            people.append(parts)
        parsed.append((w, h, people))

    if normalized is None:
        coords = [arr[arr[:, 2] > 0, :2] for _, _, people in parsed for parts in people
                  for arr in parts.values() if arr is not None]
        coords = [c for c in coords if c.size]
        normalized = bool(coords) and all(float(np.abs(c).max()) <= 1.0 for c in coords)
        if normalized:
            logger.debug("pose_keypoint: coordinates look normalised (all <= 1); scaling to the canvas")

    frames = []
    for w, h, people in parsed:
        persons = []
        for parts in people:
            kwargs = {}
            for name, arr in parts.items():
                if arr is None:
                    kwargs[name] = None
                    continue
                arr = arr.copy()
                present = arr[:, 2] > 0
                arr[~present] = 0.0
                if normalized:
                    arr[present, 0] *= w
                    arr[present, 1] *= h
                # A part whose points are all missing carries no information.
                kwargs[name] = arr if (present.any() or name == "body") else None
            if kwargs.get("body") is None:
                kwargs["body"] = np.zeros((NUM_BODY, 3), np.float32)
            persons.append(PersonPose(**kwargs))
        frames.append(FramePose(w, h, tuple(persons)))
    return frames

