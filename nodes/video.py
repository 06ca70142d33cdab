"""Load a driving video (file or image folder) from ComfyUI's input folder."""

from __future__ import annotations

import os

import folder_paths

from ..movingbg.io.video import is_video_source, read_video
from ._types import CATEGORY
from ._util import frames_to_image, interrupt_check


def _input_videos() -> list[str]:
    root = folder_paths.get_input_directory()
    if not os.path.isdir(root):
        return []
    return sorted(f for f in os.listdir(root) if not f.startswith(".") and is_video_source(os.path.join(root, f)))


class MovingBGLoadVideo:
    DESCRIPTION = ("Decode a driving video (mp4, webm, mov, mkv, gif, or a folder of images) from ComfyUI's "
                   "input folder into IMAGE frames, with start offset, every-nth, frame cap and resize. "
                   "Uses PyAV's bundled FFmpeg; no system ffmpeg needed.")
    CATEGORY = f"{CATEGORY}/io"
    RETURN_TYPES = ("IMAGE", "FLOAT", "INT")
    RETURN_NAMES = ("frames", "fps", "frame_count")
    OUTPUT_TOOLTIPS = ("Decoded frames [T, H, W, 3].", "Frame rate of the returned frames (source fps / every_nth).",
                       "Number of returned frames.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "video": (_input_videos(), {"tooltip": "Video file or image-sequence folder in ComfyUI/input."}),
            "max_frames": ("INT", {"default": 0, "min": 0, "max": 100000,
                                   "tooltip": "Keep at most this many frames (0 = all)."}),
            "start_frame": ("INT", {"default": 0, "min": 0, "max": 1000000,
                                    "tooltip": "Skip this many source frames first."}),
            "every_nth": ("INT", {"default": 1, "min": 1, "max": 100,
                                  "tooltip": "Keep one frame in every N (after the start offset)."}),
            "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                              "tooltip": "Resize width (0 = keep aspect from height; both 0 = original). "
                                         "Rounded down to a multiple of 8."}),
            "height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                               "tooltip": "Resize height (0 = keep aspect from width; both 0 = original)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, video, **_kwargs):
        path = folder_paths.get_annotated_filepath(video)
        try:
            st = os.stat(path)
            return f"{st.st_mtime_ns}-{st.st_size}"
        except OSError:
            return float("nan")

    @classmethod
    def VALIDATE_INPUTS(cls, video, **_kwargs):
        path = folder_paths.get_annotated_filepath(video)
        if not os.path.exists(path):
            return f"video: '{video}' not found in the input folder {folder_paths.get_input_directory()}"
        return True

    def load(self, video, max_frames, start_frame, every_nth, width, height):
        path = folder_paths.get_annotated_filepath(video)
        result = read_video(path, max_frames=max_frames, start=start_frame, every_nth=every_nth,
                            width=width, height=height, check_interrupt=interrupt_check())
        return frames_to_image(result.frames), float(result.fps), int(result.frames.shape[0])


NODE_CLASS_MAPPINGS = {"MovingBGLoadVideo": MovingBGLoadVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"MovingBGLoadVideo": "MovingBG Load Video"}
