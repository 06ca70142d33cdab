"""Deterministic synthetic clips with exact ground truth (test fixtures and demos)."""

from .scene import (
    OPENPOSE18_NAMES,
    SynthClip,
    gt_background_tracks,
    gt_tracks,
    make_clip,
)

__all__ = ["OPENPOSE18_NAMES", "SynthClip", "gt_background_tracks", "gt_tracks", "make_clip"]
