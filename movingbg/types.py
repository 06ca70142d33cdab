"""Payload types passed between stages (frozen dataclasses, numpy arrays in pixels)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True, eq=False)
class Tracks:
    """Sparse background point tracks for a clip.

    Attributes:
        points: ``(T, N, 2)`` float32, ``x, y`` in pixels of a ``width`` x ``height`` frame
            (pixel centres at integer coordinates).
        visible: ``(T, N)`` bool; False where the point is occluded, outside the frame, lost,
            or lies on the person (the paper's M = (1 - alpha) * T).
        width, height: frame size the coordinates refer to.
    """

    points: np.ndarray
    visible: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float32)
        vis = np.asarray(self.visible, dtype=bool)
        if pts.ndim != 3 or pts.shape[-1] != 2:
            raise ValueError(f"Tracks.points must be (T, N, 2), got {pts.shape}")
        if vis.shape != pts.shape[:2]:
            raise ValueError(f"Tracks.visible must be {pts.shape[:2]} (T, N), got {vis.shape}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"Tracks frame size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "visible", vis)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_tracks(self) -> int:
        return int(self.points.shape[1])

    def in_frame(self) -> np.ndarray:
        """``(T, N)`` bool: point lies inside the frame."""
        x, y = self.points[..., 0], self.points[..., 1]
        return (x >= 0) & (y >= 0) & (x <= self.width - 1) & (y <= self.height - 1)

    def masked(self, alpha: np.ndarray, threshold: float = 0.5) -> "Tracks":
        """Apply M = (1 - alpha) * T: hide every point that lies on the person.

        Args:
            alpha: ``(T, H, W)`` float human matte in 0..1 (1 = person), same size as the tracks.
            threshold: a point is hidden where alpha at its (rounded) position is >= threshold.
        """
        alpha = np.asarray(alpha, dtype=np.float32)
        if alpha.shape != (self.num_frames, self.height, self.width):
            raise ValueError(
                f"mask must be (T, H, W) = {(self.num_frames, self.height, self.width)}, got {alpha.shape}"
            )
        xi = np.clip(np.rint(self.points[..., 0]), 0, self.width - 1).astype(np.int64)
        yi = np.clip(np.rint(self.points[..., 1]), 0, self.height - 1).astype(np.int64)
        t = np.arange(self.num_frames)[:, None]
        on_person = alpha[t, yi, xi] >= threshold
        return Tracks(self.points, self.visible & ~on_person & self.in_frame(), self.width, self.height)

    def subset(self, index: np.ndarray) -> "Tracks":
        """Keep the tracks listed in ``index`` (an int array or a bool mask over N)."""
        return Tracks(self.points[:, index], self.visible[:, index], self.width, self.height)


@dataclass(frozen=True, eq=False)
class ReferenceInput:
    """The encoded reference image (computed once per video).

    Attributes:
        latent: ``(1, 4, h, w)`` float32 VAE latent in the VAE's raw space (not yet scaled).
        clip_embeds: ``(1, 1, D)`` float32 CLIP image embedding (``image_embeds``), or None.
        image: ``(H, W, 3)`` uint8 reference image (for previews and pose checks).
    """

    latent: "object"
    clip_embeds: "object"
    image: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the reference image in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True, eq=False)
class MotionInput:
    """The driving motion, kept as uint8 on the CPU (one clip at a time goes to the device).

    Attributes:
        pose_maps: ``(T, H, W, 3)`` uint8 pose renders, or None (no foreground guidance).
        track_maps: ``(T, H, W, 3)`` uint8 track maps, or None (no background guidance).
        pose_mismatch: distance between the first driving pose and the reference pose (fraction of
            the frame height), or None when unknown.
    """

    pose_maps: Optional[np.ndarray]
    track_maps: Optional[np.ndarray]
    pose_mismatch: Optional[float] = None

    def __post_init__(self) -> None:
        maps = [m for m in (self.pose_maps, self.track_maps) if m is not None]
        if not maps:
            raise ValueError("motion needs pose maps, track maps, or both")
        if len({m.shape for m in maps}) != 1:
            raise ValueError(f"pose maps {self.pose_maps.shape} and track maps {self.track_maps.shape} differ; "
                             "they must have the same frame count and size")

    @property
    def num_frames(self) -> int:
        return int((self.pose_maps if self.pose_maps is not None else self.track_maps).shape[0])

    @property
    def size(self) -> tuple[int, int]:
        m = self.pose_maps if self.pose_maps is not None else self.track_maps
        return int(m.shape[2]), int(m.shape[1])
