"""DWPose whole-body pose estimation (YOLOX-L person detector + RTMPose-L SimCC), run by rtmlib.

Pipeline per frame:

1. The detector (Megvii's ``yolox_l.onnx``, COCO, 640 x 640) sees the frame letterboxed
   top-left into 640 x 640 (padding 114) through rtmlib's ``YOLOX.preprocess``. We decode its raw
   ``(1, 8400, 85)`` head ourselves (grid/stride decode, ``objectness * person-class score``,
   ``score > det_threshold``, greedy NMS) because rtmlib 0.0.16's ``YOLOX.postprocess`` neither
   returns scores nor keeps only the person class. Detectors exported with NMS inside
   (``(1, N, 5)`` ``x0, y0, x1, y1, score``) are accepted too.
2. The pose model (``dw-ll_ucoco_384.onnx``, 133 COCO-WholeBody keypoints, input 288 x 384) runs
   once per box through rtmlib's ``RTMPose``: box padded by 1.25, widened to 3:4, affine-cropped,
   normalised with the ImageNet mean/std, SimCC arg-max decoded and mapped back to image pixels.
3. People are ranked by ``detection score * mean COCO-body keypoint score`` and converted to
   OpenPose-18 :class:`~movingbg.preprocess.pose_format.FramePose` (neck = shoulder midpoint).

Channel order: rtmlib's convention is BGR (its demos read frames with ``cv2.imread``) but it does
no conversion itself, and the two networks were trained differently. Megvii's YOLOX was trained on
OpenCV-loaded BGR images with no conversion, so the detector gets BGR. DWPose's RTMPose config
(``rtmpose-l_8xb32-270e_coco-ubody-wholebody-384x288.py``) uses ``bgr_to_rgb=True`` with the RGB
ImageNet mean (123.675, 116.28, 103.53), so the pose network expects RGB and gets RGB (the DWPose
ControlNet annotator and comfyui_controlnet_aux also feed it RGB). Callers pass RGB frames.

rtmlib is imported lazily (install it with ``pip install --no-deps rtmlib==0.0.16``). Model paths
must exist: rtmlib would otherwise treat a non-existent path as a URL to download.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..weights import WeightSpec
from .pose_format import FramePose, from_wholebody

logger = logging.getLogger(__name__)

__all__ = ["DWPOSE_DETECTOR", "DWPOSE_POSE", "DWPoseEstimator", "decode_yolox", "nms"]

DWPOSE_DETECTOR = WeightSpec(
    filename="yolox_l.onnx",
    urls=(
        "https://huggingface.co/yzd-v/DWPose/resolve/main/yolox_l.onnx",
        # Megvii's own release asset; byte-identical to the DWPose copy (same SHA-256).
        "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_l.onnx",
    ),
    sha256="7860ae79de6c89a3c1eb72ae9a2756c0ccfbe04b7791bb5880afabd97855a411",
    description="DWPose person detector, YOLOX-L COCO ONNX (217 MB, Apache-2.0)",
)

DWPOSE_POSE = WeightSpec(
    filename="dw-ll_ucoco_384.onnx",
    urls=("https://huggingface.co/yzd-v/DWPose/resolve/main/dw-ll_ucoco_384.onnx",),
    sha256="724f4ff2439ed61afb86fb8a1951ec39c6220682803b4a8bd4f598cd913b1843",
    description="DWPose whole-body pose model, RTMPose-L 384x288 COCO-WholeBody ONNX (134 MB, Apache-2.0)",
)

_RTMLIB_HINT = "pip install --no-deps rtmlib==0.0.16"
_YOLOX_STRIDES = (8, 16, 32)
_PERSON_CLASS = 0
_NUM_COCO_BODY = 17

FrameCallback = Optional[Callable[[int, int], None]]
"""``on_frame(frames_done, total)``."""
InterruptFn = Optional[Callable[[], None]]
"""Called before every frame; raises to abort (e.g. ComfyUI's interrupt check)."""


def _import_rtmlib():
    try:
        from rtmlib import RTMPose, YOLOX
    except ImportError as exc:
        raise ImportError(
            f"DWPose needs the 'rtmlib' package, which is not installed or failed to import ({exc}). "
            f"Install it without its dependencies (they pull GUI OpenCV builds): {_RTMLIB_HINT}"
        ) from exc
    return YOLOX, RTMPose


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``(N, 4)`` ``x0, y0, x1, y1``.
        scores: ``(N,)``.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scoring box is above this.

    Returns:
        ``(M,)`` int indices of the kept boxes, highest score first.
    """
    boxes = np.asarray(boxes, np.float64)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        ix0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        iy0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        ix1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        iy1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def decode_yolox(output: np.ndarray, ratio: float, input_hw: tuple[int, int], score_threshold: float,
                 nms_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes from a YOLOX ONNX output.

    Args:
        output: ``(1, A, 5 + C)`` raw head output (``cx, cy`` cell offsets, ``log w, log h`` in
            stride units, objectness, C class scores; anchors stride-major over strides 8/16/32,
            then row, then column), or ``(1, N, 5)`` ``x0, y0, x1, y1, score`` after in-graph NMS.
        ratio: letterbox scale (model-input pixels per image pixel).
        input_hw: model input ``(height, width)``.
        score_threshold: keep boxes with score strictly above this.
        nms_threshold: IoU threshold of the NMS (raw layout only).

    Returns:
        ``(boxes (M, 4) float32 x0, y0, x1, y1 in image pixels, scores (M,) float32)``, best first.
    """
    out = np.asarray(output, np.float32)
    if out.ndim == 3:
        out = out[0]
    if out.ndim != 2 or out.shape[1] < 5:
        raise ValueError(f"unexpected YOLOX output shape {np.shape(output)}; expected (1, A, 85) or (1, N, 5)")
    if out.shape[1] == 5:
        boxes, scores = out[:, :4] / ratio, out[:, 4]
        keep = scores > score_threshold
        boxes, scores = boxes[keep], scores[keep]
        order = np.argsort(-scores, kind="stable")
        return boxes[order].astype(np.float32), scores[order].astype(np.float32)
    h, w = input_hw
    grids, strides = [], []
    for s in _YOLOX_STRIDES:
        gh, gw = h // s, w // s
        gy, gx = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        grids.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
        strides.append(np.full(gh * gw, s))
    grid = np.concatenate(grids).astype(np.float32)
    stride = np.concatenate(strides).astype(np.float32)[:, None]
    if grid.shape[0] != out.shape[0]:
        raise ValueError(f"YOLOX output has {out.shape[0]} anchors but a {w}x{h} input gives {grid.shape[0]}")
    scores = out[:, 4] * out[:, 5 + _PERSON_CLASS]
    keep = scores > score_threshold
    if not keep.any():
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    sel = out[keep]
    centre = (sel[:, :2] + grid[keep]) * stride[keep]
    size = np.exp(sel[:, 2:4]) * stride[keep]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1) / ratio
    scores = scores[keep]
    idx = nms(boxes, scores, nms_threshold)
    return boxes[idx].astype(np.float32), scores[idx].astype(np.float32)


def _as_rgb_uint8(image: np.ndarray, where: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"{where}: expected an (H, W, 3) RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"{where}: expected uint8 (0..255) or float (0..1) pixels, got {arr.dtype}")
        arr = np.clip(np.rint(np.nan_to_num(arr.astype(np.float32) * 255.0)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


class DWPoseEstimator:
    """DWPose through rtmlib's ONNX Runtime backend.

    Args:
        det_model: path of ``yolox_l.onnx`` (see :data:`DWPOSE_DETECTOR`).
        pose_model: path of ``dw-ll_ucoco_384.onnx`` (see :data:`DWPOSE_POSE`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or a ``torch.device``); ONNX Runtime falls
            back to CPU with a warning when its CUDA provider is unavailable.
        det_threshold: person score (objectness x person probability) a box must exceed.
        nms_threshold: IoU above which overlapping person boxes are merged.
        det_input_size: detector input ``(height, width)``.
        pose_input_size: pose input ``(width, height)`` (rtmlib's order).

    Raises:
        FileNotFoundError: a model file is missing (nothing is downloaded here).
        ImportError: rtmlib is not installed.
    """

    def __init__(self, det_model: os.PathLike | str, pose_model: os.PathLike | str, device="cpu",
                 det_threshold: float = 0.3, *, nms_threshold: float = 0.45,
                 det_input_size: tuple[int, int] = (640, 640),
                 pose_input_size: tuple[int, int] = (288, 384)) -> None:
        det_path, pose_path = Path(det_model), Path(pose_model)
        for what, p in (("detector", det_path), ("pose", pose_path)):
            if not p.is_file():
                raise FileNotFoundError(f"DWPose {what} model not found: {p}")
        YOLOX, RTMPose = _import_rtmlib()
        dev = str(device)
        self.det_threshold = float(det_threshold)
        self.nms_threshold = float(nms_threshold)
        self.det_input_size = (int(det_input_size[0]), int(det_input_size[1]))
        self.pose_input_size = (int(pose_input_size[0]), int(pose_input_size[1]))
        self.device = dev
        # rtmlib announces every load with print(); keep stdout clean and log it instead.
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            self._det = YOLOX(str(det_path), model_input_size=self.det_input_size,
                              score_thr=self.det_threshold, nms_thr=self.nms_threshold,
                              backend="onnxruntime", device=dev)
            self._pose = RTMPose(str(pose_path), model_input_size=self.pose_input_size,
                                 to_openpose=False, backend="onnxruntime", device=dev)
        for line in buf.getvalue().splitlines():
            logger.debug("rtmlib: %s", line)
        logger.info("DWPose loaded (%s, %s) on %s", det_path.name, pose_path.name, dev)

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes in one RGB frame.

        Args:
            image: ``(H, W, 3)`` uint8 RGB (float 0..1 accepted).

        Returns:
            ``(boxes (M, 4) float32 x0, y0, x1, y1 in pixels, scores (M,) float32)``, best first.
        """
        rgb = _as_rgb_uint8(image, "DWPoseEstimator.detect(image)")
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        padded, ratio = self._det.preprocess(bgr)
        output = self._det.inference(padded)[0]
        return decode_yolox(output, float(ratio), self.det_input_size, self.det_threshold, self.nms_threshold)

    def estimate_wholebody(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw COCO-WholeBody output for every detected person.

        Returns:
            ``(keypoints (P, 133, 2) float32 px, scores (P, 133) float32, person_scores (P,))``,
            sorted by person score (detection score x mean COCO-body keypoint score), best first.
        """
        rgb = _as_rgb_uint8(image, "DWPoseEstimator(image)")
        boxes, det_scores = self.detect(rgb)
        if len(boxes) == 0:
            return np.zeros((0, 133, 2), np.float32), np.zeros((0, 133), np.float32), np.zeros((0,), np.float32)
        keypoints, scores = self._pose(rgb, bboxes=[b for b in boxes])
        keypoints = np.asarray(keypoints, np.float32).reshape(len(boxes), -1, 2)
        scores = np.asarray(scores, np.float32).reshape(len(boxes), -1)
        body = np.clip(scores[:, :_NUM_COCO_BODY], 0.0, None)
        person = det_scores * body.mean(axis=1)
        order = np.argsort(-person, kind="stable")
        return keypoints[order], scores[order], person[order].astype(np.float32)

    def __call__(self, image: np.ndarray, *, max_people: int = 1, keypoint_threshold: float = 0.3) -> FramePose:
        """Pose of one frame.

        Args:
            image: ``(H, W, 3)`` uint8 RGB (float 0..1 accepted).
            max_people: keep the N most confident people; 0 keeps all.
            keypoint_threshold: keypoints scoring below this are missing (conf 0).

        Returns:
            FramePose in pixels of the image, most confident person first (no people when
            nothing was detected).
        """
        if int(max_people) < 0:
            raise ValueError(f"max_people must be >= 0 (0 = all), got {max_people}")
        rgb = _as_rgb_uint8(image, "DWPoseEstimator(image)")
        h, w = rgb.shape[:2]
        keypoints, scores, _ = self.estimate_wholebody(rgb)
        if max_people:
            keypoints, scores = keypoints[:max_people], scores[:max_people]
        return from_wholebody(keypoints, scores, w, h, keypoint_threshold)

    def estimate_video(self, frames: np.ndarray | Sequence[np.ndarray], max_people: int = 1,
                       keypoint_threshold: float = 0.3, on_frame: FrameCallback = None,
                       check_interrupt: InterruptFn = None) -> list[FramePose]:
        """Pose of every frame of a clip (frames are independent; no tracking).

        Args:
            frames: ``(T, H, W, 3)`` uint8 RGB (float 0..1 accepted), or a sequence of frames.
            max_people, keypoint_threshold: as :meth:`__call__`.
            on_frame: called as ``on_frame(done, total)`` after each frame.
            check_interrupt: called before each frame; it should raise to abort.

        Returns:
            T FramePoses.
        """
        if isinstance(frames, np.ndarray) and frames.ndim != 4:
            raise ValueError(f"estimate_video: expected (T, H, W, 3) frames, got shape {frames.shape}")
        total = len(frames)
        out = []
        for t in range(total):
            if check_interrupt is not None:
                check_interrupt()
            out.append(self(frames[t], max_people=max_people, keypoint_threshold=keypoint_threshold))
            if on_frame is not None:
                on_frame(t + 1, total)
        return out
