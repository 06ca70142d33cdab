"""Custom ComfyUI type names, defined once. Never rename a published type."""

TRACKS = "MOVINGBG_TRACKS"  # movingbg.types.Tracks
POSE_KEYPOINT = "POSE_KEYPOINT"  # community OpenPose-JSON list (comfyui_controlnet_aux)
MODEL = "MOVINGBG_MODEL"  # comfy ModelPatcher around movingbg.models.generator.MovingBGModel
REFERENCE = "MOVINGBG_REFERENCE"  # movingbg.types.ReferenceInput
MOTION = "MOVINGBG_MOTION"  # movingbg.types.MotionInput
CATEGORY = "MovingBG"
