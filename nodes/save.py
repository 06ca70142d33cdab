"""Save frames as a video file in ComfyUI's output folder (shown in the UI)."""

from __future__ import annotations

import os

import folder_paths

from ..movingbg.io.video import write_video
from ._types import CATEGORY
from ._util import image_to_frames

FORMATS = {"mp4": ("libx264", ".mp4"), "webm": ("libvpx-vp9", ".webm"), "gif": ("gif", ".gif"),
           "webp": ("libwebp", ".webp")}


class MovingBGSaveVideo:
    DESCRIPTION = ("Encode frames as mp4 (H.264), webm (VP9), gif or animated webp in ComfyUI's output folder, "
                   "written atomically (temp file, then rename). Connect the driving video's fps to keep timing.")
    CATEGORY = f"{CATEGORY}/io"
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Frames to encode."}),
            "fps": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 240.0, "step": 0.1,
                              "tooltip": "Frame rate (connect MovingBG Load Video's fps)."}),
            "filename_prefix": ("STRING", {"default": "MovingBG/video",
                                           "tooltip": "File name prefix; may contain a subfolder."}),
            "format": (list(FORMATS), {"default": "mp4", "tooltip": "Container/codec."}),
            "quality": ("INT", {"default": 18, "min": 0, "max": 51,
                                "tooltip": "mp4 CRF: lower = better quality, bigger file."}),
        }}

    def save(self, images, fps, filename_prefix, format, quality):
        if format not in FORMATS:
            raise ValueError(f"'format' must be one of {list(FORMATS)}, got {format!r}")
        frames = image_to_frames(images, "images")
        codec, ext = FORMATS[format]
        h, w = frames.shape[1:3]
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), w, h)
        filename = f"{name}_{counter:05}{ext}"
        write_video(os.path.join(folder, filename), frames, float(fps), codec=codec, crf=quality)
        item = {"filename": filename, "subfolder": subfolder, "type": "output", "format": format,
                "frame_rate": float(fps), "frame_count": int(frames.shape[0])}
        key = "images" if format in ("gif", "webp") else "gifs"
        return {"ui": {key: [item], "animated": (True,)}}


NODE_CLASS_MAPPINGS = {"MovingBGSaveVideo": MovingBGSaveVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"MovingBGSaveVideo": "MovingBG Save Video"}
