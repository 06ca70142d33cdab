"""Frame plans for long videos (pure functions, no torch model).

Progressive generation (the paper, section 2.2): the video is cut into clips of at most
``clip_length`` frames. Clip 0 starts at driving frame 0 and is conditioned on the reference image
(or a blank condition). Every later clip starts ON the previous clip's last frame: that frame, already
generated, is the clip's condition image, placed as the clip's frame 0 by condition concatenation, and
is not emitted again. So clip ``k > 0`` emits ``len(frames) - 1`` new frames and every driving frame
appears exactly once in the output::

    T = 10, L = 4:  clip 0 frames 0 1 2 3   (emit 0 1 2 3, cond "reference")
                    clip 1 frames 3 4 5 6   (emit 4 5 6,   cond "previous")
                    clip 2 frames 6 7 8 9   (emit 7 8 9,   cond "previous")

Sliding windows (the AnimateAnyone / MagicAnimate baseline): windows of ``window`` frames with
``overlap`` frames in common; at every sampling step each window is denoised and the predictions of
frames covered by several windows are averaged (:func:`average_windows`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_CLIP_LENGTH",
    "ClipPlan",
    "plan_progressive",
    "plan_sliding_window",
    "window_counts",
    "average_windows",
]

MAX_CLIP_LENGTH = 32
"""Most frames one clip may have (the motion modules' position encoding; the paper: up to 32)."""

CondSource = Literal["reference", "previous"]


@dataclass(frozen=True)
class ClipPlan:
    """One clip of a progressive plan.

    Attributes:
        index: clip number ``k`` (0-based).
        frames: driving-frame indices of the clip, consecutive, ``frames[0]`` is the condition slot.
        emit: the indices of ``frames`` that are new output (all of them for clip 0, ``frames[1:]``
            for later clips).
        cond: ``"reference"`` (clip 0: reference image or blank) or ``"previous"`` (the previous
            clip's last frame, which is ``frames[0]``).
    """

    index: int
    frames: tuple[int, ...]
    emit: tuple[int, ...]
    cond: CondSource

    @property
    def length(self) -> int:
        """Number of frames the clip is sampled with."""
        return len(self.frames)

    @property
    def start(self) -> int:
        return self.frames[0]

    @property
    def stop(self) -> int:
        """One past the last driving frame of the clip."""
        return self.frames[-1] + 1

    @property
    def emit_offset(self) -> int:
        """Position in the clip of its first emitted frame (0 for clip 0, 1 afterwards)."""
        return self.frames.index(self.emit[0])


def _check_int(name: str, value: int, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def plan_progressive(num_frames: int, clip_length: int) -> list[ClipPlan]:
    """Cut ``num_frames`` driving frames into progressive clips.

    Args:
        num_frames: ``T >= 1`` frames of the output video.
        clip_length: ``L`` in ``2..32``; clip 0 has ``min(L, T)`` frames, later clips ``L`` frames
            except the last one, which may be shorter (but has at least 2: condition + 1 new frame).

    Returns:
        ``1 + ceil(max(T - L, 0) / (L - 1))`` clips; clip ``k + 1`` starts on clip ``k``'s last frame.

    Raises:
        ValueError: naming ``num_frames`` or ``clip_length`` when out of range.
    """
    _check_int("num_frames", num_frames, 1)
    _check_int("clip_length", clip_length, 2, MAX_CLIP_LENGTH)
    first = tuple(range(min(clip_length, num_frames)))
    clips = [ClipPlan(0, first, first, "reference")]
    while clips[-1].stop < num_frames:
        start = clips[-1].frames[-1]
        frames = tuple(range(start, min(start + clip_length, num_frames)))
        clips.append(ClipPlan(len(clips), frames, frames[1:], "previous"))
    logger.debug("progressive plan: %d frames in %d clips of <= %d", num_frames, len(clips), clip_length)
    return clips


def plan_sliding_window(num_frames: int, window: int, overlap: int) -> list[list[int]]:
    """Overlapping windows covering ``0..num_frames-1`` (AnimateAnyone-style long video baseline).

    Windows start every ``window - overlap`` frames; when that leaves frames at the end, one last
    window is aligned to the end of the video (so it overlaps its neighbour by ``>= overlap``). With
    ``num_frames <= window`` there is a single window of ``num_frames`` frames.

    Args:
        num_frames: ``T >= 1``.
        window: frames per window, ``1..32``.
        overlap: frames shared by neighbouring windows, ``0 <= overlap < window``.

    Returns:
        list of windows, each a list of consecutive frame indices.
    """
    _check_int("num_frames", num_frames, 1)
    _check_int("window", window, 1, MAX_CLIP_LENGTH)
    _check_int("overlap", overlap, 0)
    if overlap >= window:
        raise ValueError(f"overlap must be < window ({window}), got {overlap}")
    if num_frames <= window:
        return [list(range(num_frames))]
    stride = window - overlap
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return [list(range(s, s + window)) for s in starts]


def window_counts(windows: Sequence[Sequence[int]], num_frames: int) -> torch.Tensor:
    """``(T,)`` float32: how many windows cover each frame.

    Raises:
        ValueError: ``windows`` leave a frame uncovered or index outside ``0..T-1``.
    """
    _check_int("num_frames", num_frames, 1)
    counts = torch.zeros(num_frames)
    for win in windows:
        idx = torch.as_tensor(list(win), dtype=torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_frames):
            raise ValueError(f"windows index frames outside 0..{num_frames - 1}: {list(win)}")
        counts.index_add_(0, idx, torch.ones(idx.numel()))
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"windows leave frames {missing[:10]} uncovered")
    return counts


def average_windows(windows: Sequence[Sequence[int]], values: Sequence[torch.Tensor],
                    num_frames: int) -> torch.Tensor:
    """Average per-window values over the frames where windows overlap.

    Args:
        windows: from :func:`plan_sliding_window`.
        values: one tensor per window, ``(len(window), ...)`` (frames first, e.g. ``(F, 4, h, w)``).
        num_frames: ``T``.

    Returns:
        ``(T, ...)``: frame ``t`` = mean of the values of every window containing ``t`` (each window
        weighs ``1 / count[t]``, see :func:`window_counts`).
    """
    if len(windows) != len(values) or not values:
        raise ValueError(f"values must have one tensor per window ({len(windows)}), got {len(values)}")
    counts = window_counts(windows, num_frames)
    first = values[0]
    total = first.new_zeros((num_frames, *first.shape[1:]))
    for win, val in zip(windows, values):
        if val.shape[0] != len(win) or val.shape[1:] != first.shape[1:]:
            raise ValueError(f"value of window {list(win)[:3]}... must be ({len(win)}, "
                             f"{', '.join(map(str, first.shape[1:]))}), got {tuple(val.shape)}")
        total.index_add_(0, torch.as_tensor(list(win), dtype=torch.long, device=val.device), val)
    shape = (num_frames,) + (1,) * (first.ndim - 1)
    return total / counts.to(total).reshape(shape)
