"""Retarget a driving pose sequence to a reference person's proportions and placement.

Method (a pure function of the poses; nothing is learned):

1. **Bone lengths.** Over the skeleton tree rooted at the neck (:data:`BONES`: head, arms, legs and
   the six foot points hang off it), measure every bone of the reference person
   (``L_ref[b]``) and of the driving person (``L_drv[b]``: the median over all frames where both
   ends are present, or frame 0 only with ``lengths_from="first"``).
2. **Global scale.** ``s = sum(L_ref) / sum(L_drv)`` over the bones measured on both: a
   pose-independent body-size ratio (a bounding-box height would change with the pose).
3. **Per-limb ratios** (``per_limb=True``). ``r[b] = L_ref[b] / (s * L_drv[b])`` (1 where a
   bone could not be measured on both). Every frame is rebuilt from its neck outward: a present
   joint ``j`` with nearest present ancestor ``a`` moves to ``new[a] + r * (drv[j] - drv[a])``,
   with ``r`` the mean ratio of the bones between them (just ``r[b]`` when ``a`` is the parent).
   The neck stays where it is; when a frame has no neck, the tree is re-rooted at the first
   present joint of nose, shoulders, hips, ... Driving bone DIRECTIONS and the frame-to-frame
   motion are kept; only lengths change.
4. **Placement.** ``x -> s' * (x - a_drv) + a_ref`` for every point of every frame, with ``s' = s``
   (``match_scale``) or 1, ``a_drv`` the driving anchor on the first frame that has the person and
   ``a_ref`` the reference anchor. The anchor is the neck when both have one, else the mean of the
   joints both have, else each one's mean present joint. Without ``match_position`` the driving
   anchor keeps its relative position on the canvas (``a_ref = a_drv * ref_size / drv_size``).
5. **Hands and face** follow their body anchor: hand points keep their offset from the body wrist,
   scaled by ``s'`` times the forearm ratio; face points keep their offset from the nose, scaled
   by ``s'`` times the neck-nose ratio. Without a present wrist/nose in a frame they only get
   step 4.

Consequences: a driving sequence that is a uniformly scaled and shifted copy of the reference
comes back equal to the reference on its first frame, with later motion scaled by ``s``; with
``per_limb`` every bone length of the first frame becomes the reference's (exactly when lengths
are measured on that frame). The output canvas is the reference canvas. Only the first person of
each driving frame (DWPose puts the most confident first) is retargeted; confidences are kept.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from .pose_format import NUM_BODY, NUM_FEET, FramePose, PersonPose

logger = logging.getLogger(__name__)

__all__ = ["BONES", "retarget_poses", "bone_lengths"]

_N = NUM_BODY + NUM_FEET  # body + feet joint slots
_NECK = 1
_NOSE = 0
_R_ELBOW, _R_WRIST, _L_ELBOW, _L_WRIST = 3, 4, 6, 7

BONES: tuple[tuple[int, int], ...] = (
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),          # head
    (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7),        # arms
    (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),  # torso sides and legs
    (13, 18), (13, 19), (13, 20), (10, 21), (10, 22), (10, 23),  # feet (18.. = feet[0..])
)
"""(parent, child) pairs over OpenPose-18 indices plus 18..23 = feet 0..5, tree rooted at the neck."""

_ROOT_PREFERENCE = (1, 0, 2, 5, 8, 11, 3, 6, 9, 12, 14, 15, 4, 7, 10, 13, 16, 17, 18, 19, 20, 21, 22, 23)

_ADJ: dict[int, list[tuple[int, int]]] = {i: [] for i in range(_N)}
for _b, (_p, _c) in enumerate(BONES):
    _ADJ[_p].append((_c, _b))
    _ADJ[_c].append((_p, _b))


def _joints(person: PersonPose) -> np.ndarray:
    """``(24, 3)`` body + feet (missing feet as zero rows)."""
    feet = person.feet if person.feet is not None else np.zeros((NUM_FEET, 3), np.float32)
    return np.concatenate([person.body, feet], axis=0).astype(np.float64)


def bone_lengths(person: PersonPose) -> np.ndarray:
    """``(len(BONES),)`` bone lengths in pixels, NaN where an end is missing."""
    j = _joints(person)
    out = np.full(len(BONES), np.nan)
    for b, (p, c) in enumerate(BONES):
        if j[p, 2] > 0 and j[c, 2] > 0:
            out[b] = float(np.hypot(*(j[c, :2] - j[p, :2])))
    return out


def _bfs(root: int) -> tuple[list[int], dict[int, tuple[int, int]]]:
    """Visit order from ``root`` and ``child -> (parent, bone)`` of the re-rooted tree."""
    order, parent, queue = [root], {}, [root]
    seen = {root}
    while queue:
        node = queue.pop(0)
        for nb, b in _ADJ[node]:
            if nb not in seen:
                seen.add(nb)
                parent[nb] = (node, b)
                order.append(nb)
                queue.append(nb)
    return order, parent


_TREES = {r: _bfs(r) for r in range(_N)}


def _rescale_limbs(j: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """Rebuild present joints from the root outward with bone ``b`` scaled by ``ratio[b]``."""
    present = j[:, 2] > 0
    out = j.copy()
    root = next((r for r in _ROOT_PREFERENCE if present[r]), None)
    if root is None:
        return out
    order, parent = _TREES[root]
    for node in order[1:]:
        if not present[node]:
            continue
        ratios, anc = [], node
        while True:
            anc, b = parent[anc]
            ratios.append(ratio[b])
            if present[anc] or anc == root:
                break
        r = float(np.mean(ratios))
        out[node, :2] = out[anc, :2] + r * (j[node, :2] - j[anc, :2])
    return out


def _anchor(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matching anchor points of two ``(24, 3)`` joint sets (neck, else shared joints, else means)."""
    pa, pb = a[:NUM_BODY, 2] > 0, b[:NUM_BODY, 2] > 0
    if pa[_NECK] and pb[_NECK]:
        return a[_NECK, :2], b[_NECK, :2]
    both = pa & pb
    if both.any():
        return a[:NUM_BODY][both, :2].mean(axis=0), b[:NUM_BODY][both, :2].mean(axis=0)
    pa, pb = a[:, 2] > 0, b[:, 2] > 0
    if not pa.any() or not pb.any():
        raise ValueError("retarget_poses: no body keypoint to anchor on")
    return a[pa, :2].mean(axis=0), b[pb, :2].mean(axis=0)


def _follow(part: Optional[np.ndarray], anchor_old: np.ndarray, anchor_new: Optional[np.ndarray],
            scale: float, transform) -> Optional[np.ndarray]:
    """Move a hand/face with its body anchor: ``new_anchor + scale * (p - old_anchor)``."""
    if part is None:
        return None
    out = part.astype(np.float64).copy()
    present = out[:, 2] > 0
    if anchor_new is None:
        out[present, :2] = transform(out[present, :2])
    else:
        out[present, :2] = anchor_new + scale * (out[present, :2] - anchor_old)
    return out


def retarget_poses(driving: Sequence[FramePose], reference: FramePose, *, match_scale: bool = True,
                   match_position: bool = True, per_limb: bool = True, lengths_from: str = "median",
                   reference_person: int = 0) -> list[FramePose]:
    """Scale and shift a driving skeleton sequence onto a reference person (see module docstring).

    Args:
        driving: T frames; the first person of each is retargeted (frames without people stay empty).
        reference: a frame with the reference person (``reference.people[reference_person]``).
        match_scale: scale the driving body to the reference body size (global scale ``s``).
        match_position: put the driving anchor of the first frame on the reference anchor.
        per_limb: also match every bone's length to the reference's proportions.
        lengths_from: ``"median"`` (over driving frames) or ``"first"`` (first driving frame with
            the person) for the driving bone lengths.
        reference_person: which person of ``reference`` to use.

    Returns:
        T FramePoses on the reference canvas (``reference.width`` x ``reference.height``), pixels.

    Raises:
        ValueError: no reference person, or bad arguments.
    """
    if lengths_from not in ("median", "first"):
        raise ValueError(f"lengths_from must be 'median' or 'first', got {lengths_from!r}")
    if not isinstance(reference, FramePose):
        raise ValueError(f"reference must be a FramePose, got {type(reference).__name__}")
    if not (0 <= reference_person < len(reference.people)):
        raise ValueError(f"reference frame has {len(reference.people)} people; "
                         f"reference_person={reference_person} does not exist")
    driving = list(driving)
    for i, f in enumerate(driving):
        if not isinstance(f, FramePose):
            raise ValueError(f"driving[{i}] must be a FramePose, got {type(f).__name__}")
    ref_person = reference.people[reference_person]
    ref_j = _joints(ref_person)
    if not (ref_j[:, 2] > 0).any():
        raise ValueError("retarget_poses: the reference person has no body keypoint")

    tracked = [(t, f.people[0]) for t, f in enumerate(driving) if f.people]
    if not tracked:
        logger.warning("retarget_poses: no driving frame has a person; returning empty frames")
        return [FramePose(reference.width, reference.height, ()) for _ in driving]

    # 1-2. bone lengths and global scale
    l_ref = bone_lengths(ref_person)
    if lengths_from == "first":
        l_drv = bone_lengths(tracked[0][1])
    else:
        all_l = np.stack([bone_lengths(p) for _, p in tracked])
        with np.errstate(all="ignore"):
            counts = np.sum(np.isfinite(all_l), axis=0)
            l_drv = np.full(len(BONES), np.nan)
            for b in np.flatnonzero(counts):
                l_drv[b] = float(np.nanmedian(all_l[:, b]))
    common = np.isfinite(l_ref) & np.isfinite(l_drv) & (l_drv > 1e-6) & (l_ref > 1e-6)
    if common.any():
        s = float(l_ref[common].sum() / l_drv[common].sum())
    else:
        logger.warning("retarget_poses: no bone is visible in both reference and driving; scale 1")
        s = 1.0
    ratio = np.ones(len(BONES))
    if per_limb and common.any():
        ratio[common] = l_ref[common] / (s * l_drv[common])
    scale = s if match_scale else 1.0
    forearm = {"left": ratio[BONES.index((_L_ELBOW, _L_WRIST))], "right": ratio[BONES.index((_R_ELBOW, _R_WRIST))]}
    head = ratio[BONES.index((_NECK, _NOSE))]

    # 3. per-limb rebuild of every tracked frame
    rebuilt = {t: (_rescale_limbs(_joints(p), ratio) if per_limb else _joints(p)) for t, p in tracked}

    # 4. placement from the first tracked frame
    t0 = tracked[0][0]
    a_drv, a_ref = _anchor(rebuilt[t0], ref_j)
    if not match_position:
        f0 = driving[t0]
        a_ref = a_drv * (reference.width / f0.width, reference.height / f0.height)

    def transform(xy: np.ndarray) -> np.ndarray:
        return scale * (xy - a_drv) + a_ref

    out = []
    for t, frame in enumerate(driving):
        if not frame.people:
            out.append(FramePose(reference.width, reference.height, ()))
            continue
        person = frame.people[0]
        raw = _joints(person)
        j = rebuilt[t]
        present = j[:, 2] > 0
        new = j.copy()
        new[present, :2] = transform(j[present, :2])

        def anchor(idx: int):
            return new[idx, :2] if present[idx] else None

        body = new[:NUM_BODY]
        feet = new[NUM_BODY:] if person.feet is not None else None
        # hands/face: offsets from the ORIGINAL driving wrist/nose, re-anchored on the new ones
        left = _follow(person.left_hand, raw[_L_WRIST, :2], anchor(_L_WRIST), scale * forearm["left"], transform)
        right = _follow(person.right_hand, raw[_R_WRIST, :2], anchor(_R_WRIST), scale * forearm["right"], transform)
        face = _follow(person.face, raw[_NOSE, :2], anchor(_NOSE), scale * head, transform)
        out.append(FramePose(reference.width, reference.height,
                             (PersonPose(body=body, face=face, left_hand=left, right_hand=right, feet=feet),)))
    return out


def pose_distance(a: FramePose, b: FramePose) -> float:
    """How far apart two poses are: mean distance of the body keypoints present in both (first person
    of each), in fractions of each canvas (``x / width``, ``y / height``). ``inf`` when they share none.

    Used to decide whether the first driving pose matches the reference image (the paper then
    conditions the first clip on a blank image instead of the reference).
    """
    if not a.people or not b.people:
        return float("inf")
    pa, pb = a.people[0].body, b.people[0].body
    both = (pa[:, 2] > 0) & (pb[:, 2] > 0)
    if not both.any():
        return float("inf")
    na = pa[both, :2] / np.array([a.width, a.height], np.float32)
    nb = pb[both, :2] / np.array([b.width, b.height], np.float32)
    return float(np.linalg.norm(na - nb, axis=1).mean())
