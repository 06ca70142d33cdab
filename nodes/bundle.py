"""Build a MovingBG bundle from public weights inside ComfyUI (same as python -m movingbg.models.build)."""

from __future__ import annotations

import os
import re

import folder_paths

from ..movingbg.models.build import DTYPES, build_from_ldm, build_from_moore
from ..movingbg.models.bundle import save_bundle
from . import paths
from ._types import CATEGORY

SOURCES = ("sd15_checkpoint+animatediff", "moore_animateanyone")


def _files(folder: str) -> list[str]:
    try:
        return ["(none)"] + sorted(folder_paths.get_filename_list(folder))
    except KeyError:
        return ["(none)"]


class MovingBGBuildBundle:
    DESCRIPTION = ("Write a MovingBG bundle into models/movingbg from public weights: an SD1.5 checkpoint (both "
                   "U-Nets) + an AnimateDiff motion module (models/animatediff_models), or Moore-AnimateAnyone's four "
                   "files (denoising_unet.pth, reference_unet.pth, pose_guider.pth, motion_module.pth) in a folder. "
                   "New parts (background encoder, concat channels) start at zero. Train it (python -m "
                   "movingbg.train) before expecting moving backgrounds.")
    CATEGORY = f"{CATEGORY}/generate"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("bundle",)
    OUTPUT_NODE = True
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "source": (list(SOURCES), {"tooltip": "Which public weights to start from."}),
            "checkpoint": (_files("checkpoints"), {"tooltip": "SD1.5 checkpoint (sd15_checkpoint+animatediff)."}),
            "motion_module": (_files("animatediff_models"), {"tooltip": "AnimateDiff v2/v3 motion module "
                                                                         "(sd15_checkpoint+animatediff)."}),
            "moore_folder": ("STRING", {"default": "", "tooltip": "Folder with Moore-AnimateAnyone's four .pth files "
                                                                   "(moore_animateanyone)."}),
            "bundle_name": ("STRING", {"default": "movingbg_init", "tooltip": "File name in models/movingbg."}),
            "dtype": (list(DTYPES), {"default": "fp16", "tooltip": "Stored precision."}),
        }}

    def build(self, source, checkpoint, motion_module, moore_folder, bundle_name, dtype):
        if not re.fullmatch(r"[\w.\- ]+", bundle_name):
            raise ValueError(f"'bundle_name' {bundle_name!r} must be a plain file name (letters, digits, . _ -)")
        if source == "moore_animateanyone":
            if not moore_folder or not os.path.isdir(moore_folder):
                raise ValueError(f"'moore_folder' {moore_folder!r} is not a folder")
            model = build_from_moore(moore_folder, DTYPES[dtype])
        else:
            if checkpoint == "(none)" or motion_module == "(none)":
                raise ValueError("'checkpoint' and 'motion_module' are both needed for sd15_checkpoint+animatediff")
            model = build_from_ldm(folder_paths.get_full_path("checkpoints", checkpoint),
                                   folder_paths.get_full_path("animatediff_models", motion_module), dtype=DTYPES[dtype])
        name = bundle_name if bundle_name.endswith(".safetensors") else bundle_name + ".safetensors"
        save_bundle(model, paths.download_dir("movingbg") / name)
        return {"ui": {"text": [name]}, "result": (name,)}


NODE_CLASS_MAPPINGS = {"MovingBGBuildBundle": MovingBGBuildBundle}
NODE_DISPLAY_NAME_MAPPINGS = {"MovingBGBuildBundle": "MovingBG Build Bundle"}
