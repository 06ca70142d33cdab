"""Guidance tracks on disk: a small ``.npz`` format for the evaluation CLI.

Keys: ``points`` ``(T, N, 2)`` float32 ``x, y`` in px, ``visible`` ``(T, N)`` bool, ``width`` and
``height`` (int scalars). CoTracker-style files with ``tracks`` ``([1,] T, N, 2)`` and
``visibility`` ``([1,] T, N)`` are read too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..types import Tracks

__all__ = ["save_tracks", "load_tracks"]


def save_tracks(path: os.PathLike | str, tracks: Tracks) -> Path:
    """Write ``tracks`` to ``path`` (``.npz``, compressed). Returns the path."""
    if not isinstance(tracks, Tracks):
        raise ValueError(f"tracks must be a movingbg.types.Tracks, got {type(tracks).__name__}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as f:
        np.savez_compressed(f, points=tracks.points, visible=tracks.visible,
                            width=np.int64(tracks.width), height=np.int64(tracks.height))
    return p


def load_tracks(path: os.PathLike | str, *, width: Optional[int] = None, height: Optional[int] = None) -> Tracks:
    """Read tracks written by :func:`save_tracks` (or a CoTracker-style ``tracks``/``visibility`` file).

    Args:
        path: the ``.npz`` file.
        width, height: frame size to assume when the file does not store one.

    Raises:
        ValueError: naming ``path`` when keys are missing or malformed.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"tracks file '{p}' does not exist")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as exc:  # zip / format errors
        raise ValueError(f"tracks file '{p.name}' is not a readable .npz ({exc})") from exc
    with data:
        keys = set(data.files)
        pk = "points" if "points" in keys else "tracks" if "tracks" in keys else None
        vk = "visible" if "visible" in keys else "visibility" if "visibility" in keys else None
        if pk is None or vk is None:
            raise ValueError(f"tracks file '{p.name}' needs 'points'/'visible' (or 'tracks'/'visibility') arrays, "
                             f"has {sorted(keys)}")
        pts, vis = np.asarray(data[pk]), np.asarray(data[vk])
        w = int(data["width"]) if "width" in keys else width
        h = int(data["height"]) if "height" in keys else height
    if pts.ndim == 4 and pts.shape[0] == 1:
        pts = pts[0]
    if vis.ndim == 3 and vis.shape[0] == 1:
        vis = vis[0]
    if w is None or h is None:
        raise ValueError(f"tracks file '{p.name}' stores no width/height; pass width= and height=")
    vis = vis > 0.5 if vis.dtype != bool else vis
    try:
        return Tracks(pts, vis, w, h)
    except ValueError as exc:
        raise ValueError(f"tracks file '{p.name}': {exc}") from exc
