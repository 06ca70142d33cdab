"""Custom ComfyUI type names, defined once. Never rename a published type."""

TRACKS = "MOVINGBG_TRACKS"  # movingbg.types.Tracks
POSE_KEYPOINT = "POSE_KEYPOINT"  # community OpenPose-JSON list (comfyui_controlnet_aux)
CATEGORY = "MovingBG"
