"""Foreground motion: DWPose extraction, POSE_KEYPOINT rendering, retargeting, loading."""

from __future__ import annotations

import json
import os

import folder_paths

from ..movingbg.preprocess.pose_format import from_pose_keypoint, to_pose_keypoint
from ..movingbg.preprocess.pose_render import render_poses
from ..movingbg.preprocess.retarget import retarget_poses
from ._models import cached, onnx_device, weight_path
from ._types import CATEGORY, POSE_KEYPOINT
from ._util import frames_to_image, image_to_frames, interrupt_check, progress

_DRAW = {
    "draw_body": ("BOOLEAN", {"default": True, "tooltip": "Draw the body skeleton."}),
    "draw_hands": ("BOOLEAN", {"default": True, "tooltip": "Draw the hand skeletons."}),
    "draw_face": ("BOOLEAN", {"default": True, "tooltip": "Draw the face landmarks."}),
}


def parse_pose(pose_keypoint, name: str = "pose_keypoint"):
    try:
        return from_pose_keypoint(pose_keypoint)
    except ValueError as exc:
        raise ValueError(f"'{name}': {exc}") from None


def _estimator(det_threshold: float):
    from ..movingbg.preprocess.pose import DWPOSE_DETECTOR, DWPOSE_POSE, DWPoseEstimator

    det = weight_path(DWPOSE_DETECTOR, "movingbg_pose")
    pose = weight_path(DWPOSE_POSE, "movingbg_pose")
    device = onnx_device()
    return cached(("dwpose", det, pose, device, det_threshold),
                  lambda: DWPoseEstimator(det, pose, device=device, det_threshold=det_threshold))


class MovingBGExtractPose:
    DESCRIPTION = ("DWPose (YOLOX detector + dw-ll_ucoco_384, 133 whole-body points) on every frame: skeleton "
                   "renders in the DWPose/ControlNet style pose guiders were trained on, and POSE_KEYPOINT "
                   "(OpenPose JSON, interchangeable with comfyui_controlnet_aux). Weights are read from "
                   "models/movingbg/pose or downloaded there on first use.")
    CATEGORY = f"{CATEGORY}/motion"
    RETURN_TYPES = ("IMAGE", POSE_KEYPOINT)
    RETURN_NAMES = ("pose_images", "pose_keypoint")
    OUTPUT_TOOLTIPS = ("Skeleton renders on black, same size as the frames.", "OpenPose-JSON keypoints per frame.")
    FUNCTION = "extract"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Frames of the driving video (or a reference image)."}),
            "max_people": ("INT", {"default": 1, "min": 0, "max": 32,
                                   "tooltip": "Keep the N most confident people (0 = everyone)."}),
            "detect_threshold": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01,
                                           "tooltip": "Person detector score threshold."}),
            "keypoint_threshold": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01,
                                             "tooltip": "Keypoints below this confidence are treated as missing."}),
            **_DRAW,
        }}

    def extract(self, images, max_people, detect_threshold, keypoint_threshold, draw_body, draw_hands, draw_face):
        frames = image_to_frames(images, "images")
        est = _estimator(detect_threshold)
        poses = est.estimate_video(frames, max_people=max_people, keypoint_threshold=keypoint_threshold,
                                   on_frame=progress(len(frames)), check_interrupt=interrupt_check())
        renders = render_poses(poses, draw_body=draw_body, draw_hands=draw_hands, draw_face=draw_face)
        return frames_to_image(renders), to_pose_keypoint(poses)


class MovingBGRenderPose:
    DESCRIPTION = ("Draw POSE_KEYPOINT (from MovingBG, comfyui_controlnet_aux or any OpenPose JSON) as DWPose-style "
                   "skeleton images, so keypoints from any source can drive MovingBG.")
    CATEGORY = f"{CATEGORY}/motion"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("pose_images",)
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pose_keypoint": (POSE_KEYPOINT, {"tooltip": "OpenPose-JSON keypoints, one entry per frame."}),
            "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                              "tooltip": "Output width (0 = the keypoints' canvas width)."}),
            "height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                               "tooltip": "Output height (0 = the keypoints' canvas height)."}),
            **_DRAW,
        }}

    def render(self, pose_keypoint, width, height, draw_body, draw_hands, draw_face):
        poses = parse_pose(pose_keypoint)
        if not poses:
            raise ValueError("'pose_keypoint' holds no frames")
        if (width == 0) != (height == 0):
            raise ValueError("'width' and 'height' must both be 0 (canvas size) or both be set")
        renders = render_poses(poses, width or None, height or None, draw_body=draw_body,
                               draw_hands=draw_hands, draw_face=draw_face)
        return (frames_to_image(renders),)


class MovingBGRetargetPose:
    DESCRIPTION = ("Fit the driving skeleton to the reference person: bone lengths scaled to the reference's "
                   "proportions along the body tree, then placed where the reference stands. Avoids the "
                   "stretched limbs and drifting bodies you get when the dancer's build differs from yours.")
    CATEGORY = f"{CATEGORY}/motion"
    RETURN_TYPES = (POSE_KEYPOINT, "IMAGE")
    RETURN_NAMES = ("pose_keypoint", "pose_images")
    FUNCTION = "retarget"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "driving_pose": (POSE_KEYPOINT, {"tooltip": "Keypoints of the driving video (MovingBG Extract Pose)."}),
            "reference_pose": (POSE_KEYPOINT, {"tooltip": "Keypoints of the reference image (first frame used)."}),
            "match_proportions": ("BOOLEAN", {"default": True,
                                              "tooltip": "Scale every bone to the reference's length."}),
            "match_scale": ("BOOLEAN", {"default": True, "tooltip": "Scale the body to the reference's size."}),
            "match_position": ("BOOLEAN", {"default": True,
                                           "tooltip": "Move the body to where the reference stands."}),
            **_DRAW,
        }}

    def retarget(self, driving_pose, reference_pose, match_proportions, match_scale, match_position,
                 draw_body, draw_hands, draw_face):
        driving = parse_pose(driving_pose, "driving_pose")
        reference = parse_pose(reference_pose, "reference_pose")
        if not driving or not reference or not reference[0].people:
            raise ValueError("'reference_pose' has no person in its first frame" if driving
                             else "'driving_pose' holds no frames")
        out = retarget_poses(driving, reference[0], match_scale=match_scale, match_position=match_position,
                             per_limb=match_proportions)
        renders = render_poses(out, draw_body=draw_body, draw_hands=draw_hands, draw_face=draw_face)
        return to_pose_keypoint(out), frames_to_image(renders)


def _json_files() -> list[str]:
    root = folder_paths.get_input_directory()
    return sorted(f for f in os.listdir(root) if f.lower().endswith(".json")) if os.path.isdir(root) else []


class MovingBGLoadPoseKeypoints:
    DESCRIPTION = ("Load POSE_KEYPOINT from an OpenPose-style JSON file in ComfyUI's input folder (a list with one "
                   "entry per frame, as comfyui_controlnet_aux and MovingBG write it).")
    CATEGORY = f"{CATEGORY}/io"
    RETURN_TYPES = (POSE_KEYPOINT,)
    RETURN_NAMES = ("pose_keypoint",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"file": (_json_files(), {"tooltip": "JSON file in ComfyUI/input."})}}

    @classmethod
    def IS_CHANGED(cls, file):
        try:
            return os.stat(folder_paths.get_annotated_filepath(file)).st_mtime_ns
        except OSError:
            return float("nan")

    def load(self, file):
        path = folder_paths.get_annotated_filepath(file)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f"'file': {file} is not readable JSON: {exc}") from None
        poses = parse_pose(data, "file")
        return (to_pose_keypoint(poses),)


NODE_CLASS_MAPPINGS = {
    "MovingBGExtractPose": MovingBGExtractPose,
    "MovingBGRenderPose": MovingBGRenderPose,
    "MovingBGRetargetPose": MovingBGRetargetPose,
    "MovingBGLoadPoseKeypoints": MovingBGLoadPoseKeypoints,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MovingBGExtractPose": "MovingBG Extract Pose (DWPose)",
    "MovingBGRenderPose": "MovingBG Render Pose",
    "MovingBGRetargetPose": "MovingBG Retarget Pose",
    "MovingBGLoadPoseKeypoints": "MovingBG Load Pose Keypoints",
}
