"""Video files in and out, through PyAV (bundled FFmpeg; no system ffmpeg needed).

Frames are ``(T, H, W, 3)`` uint8 RGB numpy arrays everywhere in this module.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .atomic import temp_beside

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".gif"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})


class VideoReadError(ValueError):
    """A video file or image folder could not be read."""


@dataclass(frozen=True, eq=False)
class VideoFrames:
    """Decoded frames.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        fps: frame rate of the returned frames (source fps divided by ``every_nth``).
        source_frame_count: frames decoded from the source before the cap (after the start offset).
    """

    frames: np.ndarray
    fps: float
    source_frame_count: int


def is_video_source(path: os.PathLike | str) -> bool:
    """True for a video file with a known extension or a folder holding images."""
    p = Path(path)
    if p.is_dir():
        return any(f.suffix.lower() in IMAGE_EXTENSIONS for f in p.iterdir())
    return p.suffix.lower() in VIDEO_EXTENSIONS


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _resize(frame: np.ndarray, size: Optional[tuple[int, int]]) -> np.ndarray:
    if size is None or (frame.shape[1], frame.shape[0]) == tuple(size):
        return frame
    import cv2

    w, h = size
    interp = cv2.INTER_AREA if w * h < frame.shape[0] * frame.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(frame, (w, h), interpolation=interp)


def fit_size(width: int, height: int, target_width: int, target_height: int, multiple: int = 8) -> tuple[int, int]:
    """Output size for a resize request: 0 keeps the aspect ratio from the other side; both 0 = no resize.

    Results are rounded down to a multiple of ``multiple`` (at least ``multiple``).
    """
    if target_width <= 0 and target_height <= 0:
        return width, height
    if target_width <= 0:
        target_width = round(width * target_height / height)
    if target_height <= 0:
        target_height = round(height * target_width / width)
    snap = lambda v: max(multiple, int(v) // multiple * multiple)  # noqa: E731
    return snap(target_width), snap(target_height)


def _iter_video(path: Path):
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises several error types for unreadable input
        raise VideoReadError(f"video '{path.name}' could not be opened as a video: {exc}") from exc
    with container:
        streams = container.streams.video
        if not streams:
            raise VideoReadError(f"video '{path.name}' has no video stream")
        stream = streams[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        yield fps
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except Exception as exc:
            raise VideoReadError(f"video '{path.name}' is corrupt or truncated: {exc}") from exc


def _iter_images(folder: Path, fps: float):
    from PIL import Image

    files = sorted((f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS),
                   key=lambda f: _natural_key(f.name))
    yield fps
    for f in files:
        with Image.open(f) as im:
            yield np.asarray(im.convert("RGB"))


def read_video(path: os.PathLike | str, *, max_frames: int = 0, start: int = 0, every_nth: int = 1,
               width: int = 0, height: int = 0, sequence_fps: float = 24.0,
               check_interrupt: Optional[Callable[[], None]] = None) -> VideoFrames:
    """Decode a video file (mp4, webm, mov, mkv, avi, gif) or a folder of images.

    Args:
        path: the video file or image folder.
        max_frames: keep at most this many frames (0 = all).
        start: skip this many source frames first.
        every_nth: keep one frame in ``every_nth`` (after ``start``).
        width, height: resize to this size (0 = keep aspect from the other side; both 0 = no resize);
            rounded down to a multiple of 8.
        sequence_fps: frame rate reported for an image folder.

    Raises:
        VideoReadError: missing, empty, unreadable or frameless input, or bad arguments.
    """
    p = Path(path)
    if max_frames < 0 or start < 0 or every_nth < 1:
        raise VideoReadError(f"need max_frames >= 0, start >= 0, every_nth >= 1; got {max_frames}, {start}, {every_nth}")
    if not p.exists():
        raise VideoReadError(f"video '{p}' does not exist")
    if p.is_file() and p.stat().st_size == 0:
        raise VideoReadError(f"video '{p.name}' is an empty file (0 bytes)")
    if p.is_dir():
        source = _iter_images(p, sequence_fps)
    elif p.suffix.lower() in VIDEO_EXTENSIONS:
        source = _iter_video(p)
    else:
        raise VideoReadError(
            f"'{p.name}' is not a video: expected one of {sorted(VIDEO_EXTENSIONS)} or a folder of images")
    fps = next(source)
    frames, seen, size = [], 0, None
    for index, frame in enumerate(source):
        if index < start or (index - start) % every_nth:
            continue
        seen += 1
        if max_frames and len(frames) >= max_frames:
            continue  # keep counting for source_frame_count
        if check_interrupt is not None:
            check_interrupt()
        if size is None:
            size = fit_size(frame.shape[1], frame.shape[0], width, height) if (width or height) else None
        frames.append(_resize(frame, size))
    if not frames:
        raise VideoReadError(f"video '{p.name}' has no frames after start={start} (every_nth={every_nth})")
    if len({f.shape for f in frames}) != 1:
        raise VideoReadError(f"frames of '{p.name}' have different sizes; set width/height to resize them")
    return VideoFrames(np.stack(frames), fps / every_nth if fps else 0.0, seen)


def write_video(path: os.PathLike | str, frames: np.ndarray, fps: float, *, codec: str = "libx264",
                crf: int = 18, pix_fmt: str = "yuv420p") -> Path:
    """Encode ``(T, H, W, 3)`` uint8 frames atomically (temp file, then rename). Returns the path.

    ``codec`` is an FFmpeg encoder name: ``libx264`` (mp4), ``libvpx-vp9`` (webm), ``gif``, ``libwebp``.
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    dest = Path(path)
    tmp = temp_beside(dest, ".tmp-", dest.suffix)
    from fractions import Fraction

    try:
        h, w = frames.shape[1:3]
        if codec in ("libx264", "libvpx-vp9") and (h % 2 or w % 2):
            frames = frames[:, : h - h % 2, : w - w % 2]
        with av.open(tmp, mode="w") as out:
            stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            if codec == "gif":
                stream.pix_fmt = "rgb8"
            elif codec == "libwebp":
                stream.pix_fmt = "yuv420p"
            else:
                stream.pix_fmt = pix_fmt
                if codec == "libx264":
                    stream.options = {"crf": str(crf)}
            fmt = "rgb24"
            for f in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format=fmt)):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
