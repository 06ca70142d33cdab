"""Background motion: point tracks masked by the human matte (M = (1 - alpha) * T), camera moves, renders."""

from __future__ import annotations

import logging

import numpy as np

from ..movingbg.preprocess.camera import camera_tracks
from ..movingbg.preprocess.track_render import render_tracks
from ..movingbg.preprocess.tracks import make_queries, track_klt, track_points_to_tracks
from ..movingbg.types import Tracks
from ._models import hosted_module, load_to_device, torch_patcher, weight_path
from ._types import CATEGORY, MODEL, TRACKS
from ._util import (check_same_frames, frames_to_image, image_to_frames, interrupt_check, mask_to_alpha,
                    progress_and_interrupt, warn)

logger = logging.getLogger(__name__)

BACKENDS = ("klt", "cotracker3")
MOVES = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "orbit_left",
         "orbit_right", "handheld")
EASINGS = ("linear", "ease_in", "ease_out", "ease_in_out")


def _alpha_for(frames: np.ndarray, mask, name: str = "mask"):
    if mask is None:
        return None
    alpha = mask_to_alpha(mask, name)
    check_same_frames(frames, alpha, "images", name)
    if alpha.shape[0] == 1 and frames.shape[0] > 1:
        alpha = np.repeat(alpha, frames.shape[0], axis=0)
    return alpha


def _cotracker(frames: np.ndarray, alpha, num_points: int, min_distance: float, reseed_every: int) -> Tracks:
    from ..movingbg.preprocess.cotracker import COTRACKER3_OFFLINE, load_cotracker3, track_points

    path = weight_path(COTRACKER3_OFFLINE, "movingbg_tracker")
    patcher = torch_patcher(("cotracker3", path), lambda: load_cotracker3(path))
    model, device = load_to_device(patcher)
    queries = make_queries(alpha, num_points, min_distance, every=reseed_every or None, frames=frames)
    h, w = frames.shape[1:3]
    if len(queries) == 0:
        return Tracks(np.zeros((len(frames), 0, 2), np.float32), np.zeros((len(frames), 0), bool), w, h)
    points, visible = track_points(model, frames, queries, device=device, check_interrupt=interrupt_check())
    return track_points_to_tracks(points, visible, w, h, alpha=alpha, queries=queries, hide_before_query=True)


def _preview(tracks: Tracks, frames: np.ndarray):
    return frames_to_image(render_tracks(tracks, trail=6, background=frames))


class MovingBGExtractTracks:
    DESCRIPTION = ("Sparse background point tracks (the paper's background motion): points seeded on the background "
                   "(mask < 0.5) with a minimum spacing, tracked through the clip, re-seeded when lost, and hidden "
                   "wherever they fall on the person. 'klt' (OpenCV Lucas-Kanade with forward-backward check) needs "
                   "no weights; 'cotracker3' is more robust and downloads its weights on first use.")
    CATEGORY = f"{CATEGORY}/motion"
    RETURN_TYPES = (TRACKS, "IMAGE")
    RETURN_NAMES = ("tracks", "preview")
    OUTPUT_TOOLTIPS = ("Tracks (T x N positions + visibility, in pixels).", "Tracks drawn over the frames.")
    FUNCTION = "extract"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Frames of the driving video."}),
            "mask": ("MASK", {"tooltip": "Human matte of the same frames (1 = person), e.g. MovingBG Human Matte."}),
            "backend": (list(BACKENDS), {"default": "klt", "tooltip": "klt: fast, no weights. cotracker3: robust, "
                                                                       "~100 MB weights, slow on CPU."}),
            "num_points": ("INT", {"default": 50, "min": 1, "max": 1000,
                                   "tooltip": "Visible tracks to keep alive (the paper trains with 5-50)."}),
            "min_distance": ("INT", {"default": 16, "min": 1, "max": 512,
                                     "tooltip": "Minimum spacing of seeded points, pixels."}),
            "reseed": ("BOOLEAN", {"default": True,
                                   "tooltip": "Seed new points when tracks are lost or leave the frame."}),
            "reseed_every": ("INT", {"default": 8, "min": 0, "max": 1000,
                                     "tooltip": "cotracker3: also seed queries every N frames (0 = first frame only)."}),
        }}

    def extract(self, images, mask, backend, num_points, min_distance, reseed, reseed_every):
        frames = image_to_frames(images, "images")
        alpha = _alpha_for(frames, mask)
        if frames.shape[0] == 1:
            warn("'images' has a single frame: tracks cannot move; returning their positions only")
        if alpha is not None and (alpha[0] >= 0.5).all():
            warn("'mask' covers the whole first frame (no background): returning empty tracks")
        if backend == "klt":
            tracks = track_klt(frames, alpha, num_points=num_points, min_distance=min_distance, reseed=reseed,
                               check_interrupt=interrupt_check(),
                               on_frame=progress_and_interrupt(len(frames)))
        elif backend == "cotracker3":
            tracks = _cotracker(frames, alpha, num_points, min_distance, reseed_every if reseed else 0)
        else:
            raise ValueError(f"'backend' must be one of {BACKENDS}, got {backend!r}")
        if tracks.num_tracks == 0:
            warn("no background track could be seeded (no background, or a flat image)")
        return tracks, _preview(tracks, frames)


class MovingBGCameraTracks:
    DESCRIPTION = ("Background tracks for a chosen camera move (static lock, pan, tilt, zoom, orbit, handheld shake), "
                   "with strength and easing, over the background of the frames. Use it to add a camera move to a "
                   "static-camera driving video, or 'static' to force a still background.")
    CATEGORY = f"{CATEGORY}/motion"
    RETURN_TYPES = (TRACKS, "IMAGE")
    RETURN_NAMES = ("tracks", "preview")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Frames that set the clip length and size (the driving video)."}),
            "move": (list(MOVES), {"default": "pan_right", "tooltip": "Camera move to synthesise."}),
            "strength": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 2.0, "step": 0.01,
                                   "tooltip": "Size of the move over the whole clip: pan/orbit = fraction of the frame "
                                              "width, tilt = fraction of the height, zoom = relative scale change, "
                                              "handheld = peak shake as a fraction of the frame size."}),
            "easing": (list(EASINGS), {"default": "ease_in_out", "tooltip": "How the move speeds up and slows down."}),
            "num_points": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": "Number of tracks."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                             "tooltip": "Seed for point placement and handheld shake."}),
        }, "optional": {
            "mask": ("MASK", {"tooltip": "Human matte: tracks are seeded on and shown over the background only."}),
        }}

    def make(self, images, move, strength, easing, num_points, seed, mask=None):
        frames = image_to_frames(images, "images")
        alpha = _alpha_for(frames, mask)
        t, h, w = frames.shape[:3]
        tracks = camera_tracks(t, w, h, move, strength, easing, alpha=alpha, num_points=num_points, seed=seed)
        return tracks, _preview(tracks, frames)


class MovingBGRenderTracks:
    DESCRIPTION = ("Draw MOVINGBG_TRACKS as the maps the background encoder reads: each track a disc in its own fixed "
                   "colour on black (identity stays visible across frames), with a fading trail of its previous "
                   "positions; or over images for a preview. Connect the MovingBG model to draw its maps exactly "
                   "as it was trained (its trail replaces the 'trail' widget).")
    CATEGORY = f"{CATEGORY}/motion"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("track_images",)
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "tracks": (TRACKS, {"tooltip": "Background tracks (MovingBG Extract Tracks or Camera Tracks)."}),
            "radius": ("INT", {"default": 0, "min": 0, "max": 64,
                               "tooltip": "Disc radius in pixels (0 = automatic from the frame size)."}),
            "trail": ("INT", {"default": 0, "min": 0, "max": 64,
                              "tooltip": "Also draw the previous N positions as a fading trail."}),
        }, "optional": {
            "images": ("IMAGE", {"tooltip": "Draw over these frames instead of black (preview)."}),
            "movingbg_model": (MODEL, {"tooltip": "MovingBG Load Model: draw the maps with the trail this model "
                                                  "was trained on (overrides 'trail')."}),
        }}

    def render(self, tracks, radius, trail, images=None, movingbg_model=None):
        if not isinstance(tracks, Tracks):
            raise ValueError(f"'tracks' must be MOVINGBG_TRACKS, got {type(tracks).__name__}")
        if movingbg_model is not None:
            config = hosted_module(movingbg_model).config
            if config.track_trail != trail:
                logger.info("MovingBG Render Tracks: trail %d (the model's) instead of the widget's %d",
                            config.track_trail, trail)
            trail = config.track_trail
        background = None
        if images is not None:
            background = image_to_frames(images, "images")
            if background.shape[:3] != (tracks.num_frames, tracks.height, tracks.width):
                raise ValueError(f"'images' is {background.shape[0]} frames of {background.shape[2]}x"
                                 f"{background.shape[1]} but 'tracks' is {tracks.num_frames} frames of "
                                 f"{tracks.width}x{tracks.height}")
        out = render_tracks(tracks, radius=radius or None, trail=trail, background=background)
        return (frames_to_image(out),)


NODE_CLASS_MAPPINGS = {
    "MovingBGExtractTracks": MovingBGExtractTracks,
    "MovingBGCameraTracks": MovingBGCameraTracks,
    "MovingBGRenderTracks": MovingBGRenderTracks,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MovingBGExtractTracks": "MovingBG Extract Background Tracks",
    "MovingBGCameraTracks": "MovingBG Camera Tracks",
    "MovingBGRenderTracks": "MovingBG Render Tracks",
}
