"""Human matte: frames -> MASK (soft alpha, 1 = person)."""

from __future__ import annotations

import numpy as np

from ..movingbg.preprocess.matte import U2NET_HUMAN_SEG, U2NetHumanSeg, matte_from_pose, refine_matte
from ._models import cached, onnx_device, weight_path
from ._types import CATEGORY, POSE_KEYPOINT
from ._util import alpha_to_mask, image_to_frames, progress_and_interrupt
from .pose import parse_pose

METHODS = ("pose_grabcut", "u2net_human_seg")


def _bodies_for_frames(poses, count: int, width: int, height: int) -> list[list[np.ndarray]]:
    """Per frame, the OpenPose-18 bodies scaled to the frame size."""
    if len(poses) != count:
        raise ValueError(f"'pose_keypoint' has {len(poses)} frames but 'images' has {count}; "
                         "extract the pose from the same frames")
    out = []
    for fp in poses:
        sx, sy = width / fp.width, height / fp.height
        out.append([p.body * np.array([sx, sy, 1.0], np.float32) for p in fp.people])
    return out


class MovingBGHumanMatte:
    DESCRIPTION = ("Soft human matte for the background masking M = (1 - alpha) * T. 'pose_grabcut' (default) works "
                   "offline with no weights: the DWPose skeleton seeds GrabCut. 'u2net_human_seg' is a learned "
                   "human segmenter downloaded on first use into models/movingbg/matte. Any MASK from another "
                   "node can be used instead.")
    CATEGORY = f"{CATEGORY}/motion"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    FUNCTION = "matte"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Frames of the driving video."}),
            "method": (list(METHODS), {"default": "pose_grabcut",
                                       "tooltip": "pose_grabcut: offline, needs pose_keypoint. "
                                                  "u2net_human_seg: learned, downloads ~170 MB once."}),
            "grow": ("INT", {"default": 4, "min": -64, "max": 64,
                             "tooltip": "Dilate (+) or erode (-) the matte by this many pixels; growing keeps "
                                        "background tracks off the person's edge."}),
            "feather": ("FLOAT", {"default": 1.5, "min": 0.0, "max": 20.0, "step": 0.5,
                                  "tooltip": "Edge softness (Gaussian sigma, pixels) for pose_grabcut."}),
        }, "optional": {
            "pose_keypoint": (POSE_KEYPOINT, {"tooltip": "Keypoints of the same frames (needed by pose_grabcut)."}),
        }}

    def matte(self, images, method, grow, feather, pose_keypoint=None):
        frames = image_to_frames(images, "images")
        t, h, w = frames.shape[:3]
        step = progress_and_interrupt(t)
        if method == "pose_grabcut":
            if pose_keypoint is None:
                raise ValueError("'pose_keypoint' is required by method 'pose_grabcut': connect the POSE_KEYPOINT "
                                 "output of MovingBG Extract Pose, or choose method 'u2net_human_seg'")
            bodies = _bodies_for_frames(parse_pose(pose_keypoint), t, w, h)
            alpha = matte_from_pose(frames, bodies, feather=feather, on_frame=step)
        elif method == "u2net_human_seg":
            path = weight_path(U2NET_HUMAN_SEG, "movingbg_matte")
            device = onnx_device()
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else None
            model = cached(("u2net", path, device), lambda: U2NetHumanSeg(path, providers))
            alpha = model(frames, on_frame=step)
        else:
            raise ValueError(f"'method' must be one of {METHODS}, got {method!r}")
        return (alpha_to_mask(refine_matte(alpha, grow=grow)),)


NODE_CLASS_MAPPINGS = {"MovingBGHumanMatte": MovingBGHumanMatte}
NODE_DISPLAY_NAME_MAPPINGS = {"MovingBGHumanMatte": "MovingBG Human Matte"}
