"""Human mattes (alpha, 1 = person) for the background masking M = (1 - alpha) * T.

Two back-ends:

* ``pose_grabcut`` (offline default, no weights): the skeleton of each frame (OpenPose-18 body
  keypoints) is drawn as a body silhouette that seeds OpenCV's GrabCut (thin bones = sure person,
  a thick body = probably person, a ring around it = probably background, the rest = background);
  GrabCut refines the edge from the frame's colours, the result is feathered into a soft alpha.
* ``u2net_human_seg`` (higher quality, downloaded on first use): U^2-Net human segmentation
  (Apache-2.0) through onnxruntime.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import numpy as np

from ..weights import WeightSpec

logger = logging.getLogger(__name__)

U2NET_HUMAN_SEG = WeightSpec(
    filename="u2net_human_seg.onnx",
    urls=("https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net_human_seg.onnx",),
    sha256=None,
    md5="c09ddc2e0104f800e3e1bb4652583d1f",  # published by rembg
    description="U^2-Net human segmentation (rembg release)",
)

# OpenPose-18 bones: (a, b) index pairs
_BONES = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
          (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
_TORSO = (2, 5, 11, 8)  # r-shoulder, l-shoulder, l-hip, r-hip


def _person_scale(kp: np.ndarray, ok: np.ndarray) -> float:
    """Characteristic limb width in pixels for one skeleton ``(18, 3)``."""
    def dist(a, b):
        return float(np.hypot(*(kp[a, :2] - kp[b, :2]))) if ok[a] and ok[b] else 0.0

    hips = [kp[i, :2] for i in (8, 11) if ok[i]]
    torso = float(np.hypot(*(kp[1, :2] - np.mean(hips, axis=0)))) if ok[1] and hips else 0.0
    shoulders = dist(2, 5)
    pts = kp[ok, :2]
    extent = float(np.ptp(pts[:, 1])) / 3.0 if len(pts) > 1 else 0.0
    ref = max(torso, shoulders * 1.3, extent * 0.9)
    return max(2.0, 0.16 * ref)


def body_seed_mask(bodies: Sequence[np.ndarray], width: int, height: int, conf: float = 0.3) -> np.ndarray:
    """GrabCut seed labels ``(H, W)`` uint8 from the body skeletons of one frame.

    Args:
        bodies: one ``(18, 3)`` array per person, ``x, y, confidence`` in pixels (OpenPose-18 order).
    Returns:
        labels in ``{cv2.GC_BGD, cv2.GC_FGD, cv2.GC_PR_BGD, cv2.GC_PR_FGD}``; all ``GC_BGD`` when no
        person has two or more confident keypoints.
    """
    import cv2

    labels = np.full((height, width), cv2.GC_BGD, np.uint8)
    sure, prob = np.zeros((height, width), np.uint8), np.zeros((height, width), np.uint8)
    for kp in bodies:
        kp = np.asarray(kp, dtype=np.float32)
        ok = kp[:, 2] >= conf
        if ok.sum() < 2:
            continue
        w = _person_scale(kp, ok)
        pt = lambda i: (int(round(kp[i, 0])), int(round(kp[i, 1])))  # noqa: E731
        for a, b in _BONES:
            if ok[a] and ok[b]:
                cv2.line(prob, pt(a), pt(b), 1, int(round(2.2 * w)), cv2.LINE_8)
                cv2.line(sure, pt(a), pt(b), 1, max(1, int(round(0.35 * w))), cv2.LINE_8)
        if all(ok[i] for i in _TORSO):
            cv2.fillConvexPoly(prob, np.array([pt(i) for i in _TORSO], np.int32), 1)
        head = [i for i in (0, 14, 15, 16, 17) if ok[i]]
        if head:
            c = kp[head, :2].mean(axis=0)
            r = max(1.6 * w, float(np.hypot(*(kp[0, :2] - kp[1, :2]))) * 0.55 if ok[0] and ok[1] else 1.6 * w)
            cv2.circle(prob, (int(round(c[0])), int(round(c[1]))), int(round(r)), 1, -1)
        ring = int(round(2.0 * w)) * 2 + 1
        near = cv2.dilate(prob, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ring, ring)))
        labels[(near > 0) & (labels == cv2.GC_BGD)] = cv2.GC_PR_BGD
    labels[prob > 0] = cv2.GC_PR_FGD
    labels[sure > 0] = cv2.GC_FGD
    return labels


def _roi(seeds: np.ndarray, pad_frac: float = 0.25) -> tuple[slice, slice]:
    """Bounding box of the non-background seeds, padded so GrabCut still sees background around it."""
    ys, xs = np.nonzero(seeds != 0)  # 0 = cv2.GC_BGD
    h, w = seeds.shape
    py, px = int((ys.max() - ys.min() + 1) * pad_frac) + 4, int((xs.max() - xs.min() + 1) * pad_frac) + 4
    return (slice(max(0, ys.min() - py), min(h, ys.max() + py + 1)),
            slice(max(0, xs.min() - px), min(w, xs.max() + px + 1)))


def _grabcut(frame: np.ndarray, seeds: np.ndarray, iterations: int, work_size: int) -> np.ndarray:
    """GrabCut restricted to the padded box around the seeds, at most ``work_size`` px on its long side."""
    import cv2

    h, w = seeds.shape
    out = np.zeros((h, w), np.float32)
    if not np.any(seeds == cv2.GC_FGD) and not np.any(seeds == cv2.GC_PR_FGD):
        return out
    sy, sx = _roi(seeds)
    crop, lab = frame[sy, sx], seeds[sy, sx]
    ch, cw = lab.shape
    scale = min(1.0, work_size / max(ch, cw))
    size = (max(8, int(round(cw * scale))), max(8, int(round(ch * scale))))
    if scale < 1:
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        lab = cv2.resize(lab, size, interpolation=cv2.INTER_NEAREST)
    else:
        lab = lab.copy()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    if np.any((lab == cv2.GC_BGD) | (lab == cv2.GC_PR_BGD)):
        try:
            cv2.grabCut(np.ascontiguousarray(crop[..., ::-1]), lab, None, bgd, fgd, iterations,
                        cv2.GC_INIT_WITH_MASK)
        except cv2.error as exc:  # degenerate colour models (e.g. a flat frame): keep the seeds
            logger.debug("GrabCut failed, using the skeleton seeds: %s", exc)
    person = ((lab == cv2.GC_FGD) | (lab == cv2.GC_PR_FGD)).astype(np.float32)
    out[sy, sx] = cv2.resize(person, (cw, ch), interpolation=cv2.INTER_LINEAR) if scale < 1 else person
    return out


def matte_from_pose(frames: np.ndarray, bodies: Sequence[Sequence[np.ndarray]], *, conf: float = 0.3,
                    iterations: int = 3, work_size: int = 256, feather: float = 1.5,
                    on_frame: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Soft human matte from frames and their body skeletons (offline, no weights).

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        bodies: per frame, a list of ``(18, 3)`` OpenPose-18 skeletons in pixels of this frame size.
        conf: keypoint confidence below which a keypoint is ignored.
        iterations: GrabCut iterations per frame.
        work_size: frames are processed at most this large (longer side), then upsampled.
        feather: Gaussian sigma (pixels) softening the matte edge; 0 = hard edge.
    Returns:
        ``(T, H, W)`` float32 alpha in 0..1 (1 = person).
    """
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape}")
    if len(bodies) != len(frames):
        raise ValueError(f"pose has {len(bodies)} frames but the images have {len(frames)}; they must match")
    t, h, w = frames.shape[:3]
    out = np.zeros((t, h, w), np.float32)
    for i in range(t):
        seeds = body_seed_mask(bodies[i], w, h, conf)
        alpha = _grabcut(frames[i], seeds, iterations, work_size)
        if feather > 0 and alpha.any():
            alpha = cv2.GaussianBlur(alpha, (0, 0), feather)
        out[i] = np.clip(alpha, 0.0, 1.0)
        if on_frame is not None:
            on_frame(i)
    return out


class U2NetHumanSeg:
    """U^2-Net human segmentation through onnxruntime: ``(T, H, W, 3)`` uint8 -> ``(T, H, W)`` alpha."""

    SIZE = 320
    MEAN = np.array([0.485, 0.456, 0.406], np.float32)
    STD = np.array([0.229, 0.224, 0.225], np.float32)

    def __init__(self, model_path: str, providers: Optional[list[str]] = None):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(model_path), providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        x = cv2.resize(frame, (self.SIZE, self.SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
        x = x / max(float(x.max()), 1e-6)  # the published pre-processing scales by the image maximum
        x = (x - self.MEAN) / self.STD
        return x.transpose(2, 0, 1)[None]  # (1, 3, 320, 320)

    def __call__(self, frames: np.ndarray, on_frame: Optional[Callable[[int], None]] = None) -> np.ndarray:
        import cv2

        t, h, w = frames.shape[:3]
        out = np.zeros((t, h, w), np.float32)
        for i, frame in enumerate(frames):
            pred = self.session.run(None, {self.input_name: self._prepare(frame)})[0][0, 0]  # (320, 320)
            lo, hi = float(pred.min()), float(pred.max())
            pred = (pred - lo) / (hi - lo) if hi - lo > 1e-6 else np.zeros_like(pred)
            out[i] = cv2.resize(pred.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
            if on_frame is not None:
                on_frame(i)
        return np.clip(out, 0.0, 1.0)


def refine_matte(alpha: np.ndarray, *, grow: int = 0, threshold: float = 0.0) -> np.ndarray:
    """Grow (dilate, > 0) or shrink (< 0) a ``(T, H, W)`` matte by ``grow`` pixels; optionally binarise."""
    import cv2

    alpha = np.asarray(alpha, np.float32)
    if grow:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(grow) + 1, 2 * abs(grow) + 1))
        op = cv2.dilate if grow > 0 else cv2.erode
        alpha = np.stack([op(a, k) for a in alpha])
    if threshold > 0:
        alpha = (alpha >= threshold).astype(np.float32)
    return alpha
