"""Training samples from the prepared cache: a clip, its pose and track maps, a reference, a condition.

Sampling is STATELESS: the data stream is an endless sequence of global sample indices ``g = 0, 1, ...``
and everything about sample ``g`` -- which video (a fresh permutation of the videos per epoch), which
clip, which reference frame, which 5-50 tracks, blank condition, CFG drops -- is a pure function of
``(seed, g)``. Process ``r`` of ``W`` takes, at micro-step ``m``, the samples
``(m * W + r) * B ... + B - 1``. So a run resumed at micro-step ``m`` sees exactly the data an
uninterrupted run would, whatever the number of data-loader workers.

Per sample (the paper, sections 2.1-2.2):

* a clip of ``clip_length`` frames (every ``frame_stride``-th cached frame) at a random start;
* the reference image: a random frame OUTSIDE the clip when the video is long enough;
* the condition frame for concatenation: the clip's first frame (the trainer encodes it), blank
  with ``blank_condition_prob``;
* pose maps: the cached keypoints re-rendered at the training size (DWPose/ControlNet style);
* track maps: ``tracks_range`` (5..50) random background tracks of the clip re-rendered as discs.

Frames are scaled to cover ``width x height`` and centre-cropped; keypoints and tracks follow.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..prepare import PreparedVideo, list_prepared
from ..preprocess.pose_format import FramePose, PersonPose
from ..preprocess.pose_render import render_pose
from ..preprocess.track_render import render_tracks
from ..preprocess.tracks import select_track_indices
from ..types import Tracks

logger = logging.getLogger(__name__)

__all__ = ["DataOptions", "ClipDataset", "StreamSampler", "SampleChoice", "Geometry"]

_PERM_SALT = 0x5EED


@dataclass(frozen=True)
class DataOptions:
    """What a sample looks like (a subset of :class:`~movingbg.train.config.TrainConfig`).

    Attributes:
        clip_length, frame_stride, width, height, tracks_range, track_radius, anchor_tracks: see TrainConfig.
        track_trail: trail of the track maps (the model's ``MovingBGConfig.track_trail``).
        blank_condition_prob, drop_joint_prob, drop_joint_includes_condition, drop_clip_prob,
            drop_reference_prob: see TrainConfig.
        seed: the run's seed.
    """

    clip_length: int = 24
    frame_stride: int = 1
    width: int = 448
    height: int = 640
    tracks_range: tuple[int, int] = (5, 50)
    track_radius: int = 0
    anchor_tracks: bool = False
    track_trail: int = 0
    blank_condition_prob: float = 0.1
    drop_joint_prob: float = 0.1
    drop_joint_includes_condition: bool = False
    drop_clip_prob: float = 0.0
    drop_reference_prob: float = 0.0
    seed: int = 0

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> DataOptions:
        """Pick the matching fields of a TrainConfig (``overrides`` win)."""
        return cls(**{f: getattr(config, f) for f in cls.__dataclass_fields__ if f not in overrides}, **overrides)

    @property
    def span(self) -> int:
        """Cached frames a clip covers."""
        return (self.clip_length - 1) * self.frame_stride + 1


@dataclass(frozen=True)
class SampleChoice:
    """The random choices of one sample.

    Attributes:
        video: index into the dataset's videos.
        frames: the clip's cached-frame indices.
        reference: cached-frame index of the reference image.
        blank: the condition frame is blank.
        drop_clip, drop_reference: CFG drops.
    """

    video: int
    frames: tuple[int, ...]
    reference: int
    blank: bool
    drop_clip: bool
    drop_reference: bool


@dataclass(frozen=True)
class Geometry:
    """Scale-to-cover and centre-crop from a ``src`` frame size to the training size.

    ``x' = (x + 0.5) * scale - 0.5 - left`` (pixel centres at integers), likewise for ``y``.
    """

    src_w: int
    src_h: int
    dst_w: int
    dst_h: int

    @property
    def scale(self) -> float:
        return max(self.dst_w / self.src_w, self.dst_h / self.src_h)

    @property
    def resized(self) -> tuple[int, int]:
        s = self.scale
        return max(self.dst_w, int(round(self.src_w * s))), max(self.dst_h, int(round(self.src_h * s)))

    @property
    def offset(self) -> tuple[int, int]:
        rw, rh = self.resized
        return (rw - self.dst_w) // 2, (rh - self.dst_h) // 2

    def images(self, frames: np.ndarray) -> np.ndarray:
        """``(K, H0, W0, 3)`` uint8 -> ``(K, dst_h, dst_w, 3)``."""
        import cv2

        if (self.src_w, self.src_h) == (self.dst_w, self.dst_h):
            return frames
        rw, rh = self.resized
        left, top = self.offset
        interp = cv2.INTER_AREA if self.scale < 1 else cv2.INTER_LINEAR
        out = np.empty((len(frames), self.dst_h, self.dst_w, 3), np.uint8)
        for i, f in enumerate(frames):
            out[i] = cv2.resize(f, (rw, rh), interpolation=interp)[top:top + self.dst_h, left:left + self.dst_w]
        return out

    def points(self, xy: np.ndarray) -> np.ndarray:
        """``(..., 2)`` pixel coordinates in the source -> in the training frame."""
        if (self.src_w, self.src_h) == (self.dst_w, self.dst_h):
            return xy
        rw, rh = self.resized
        left, top = self.offset
        sx, sy = rw / self.src_w, rh / self.src_h
        out = np.empty_like(xy, dtype=np.float32)
        out[..., 0] = (xy[..., 0] + 0.5) * sx - 0.5 - left
        out[..., 1] = (xy[..., 1] + 0.5) * sy - 0.5 - top
        return out

    def pose(self, frame: FramePose) -> FramePose:
        people = []
        for p in frame.people:
            parts = {}
            for name, arr in p.parts().items():
                if arr is None:
                    parts[name] = None
                    continue
                moved = arr.copy()
                moved[:, :2] = self.points(arr[:, :2])
                parts[name] = moved
            people.append(PersonPose(**parts))
        return FramePose(self.dst_w, self.dst_h, tuple(people))


class _VideoCache:
    """Per-process cache of a video's poses and tracks (small next to the frames)."""

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._items: dict[str, tuple[list[FramePose], Tracks]] = {}

    def get(self, video: PreparedVideo) -> tuple[list[FramePose], Tracks]:
        key = str(video.path)
        if key not in self._items:
            if len(self._items) >= self.limit:
                self._items.pop(next(iter(self._items)))
            self._items[key] = (video.poses(), video.tracks())
        return self._items[key]


class ClipDataset(Dataset):
    """Map-style dataset indexed by GLOBAL sample index (any int >= 0; the stream is endless).

    Args:
        videos: prepared videos, or a cache folder to list; videos shorter than a clip are skipped.
        options: :class:`DataOptions`.

    Item ``g`` is a dict of numpy arrays: ``frames`` ``(F, H, W, 3)`` uint8, ``reference``
    ``(H, W, 3)`` uint8, ``pose`` ``(F, H, W, 3)`` uint8 renders, ``tracks`` ``(F, H, W, 3)`` uint8 track
    maps, ``blank`` / ``drop_clip`` / ``drop_reference`` bool, ``index`` int64 (= ``g``), and where the sample's
    pictures come from: ``video`` (index into ``videos``), ``frame_ids`` ``(F,)`` and ``reference_id`` (cached-frame
    indices).
    """

    def __init__(self, videos: Sequence[PreparedVideo] | str, options: DataOptions) -> None:
        if isinstance(videos, (str, bytes)) or hasattr(videos, "__fspath__"):
            videos = list_prepared(videos)
        kept = [v for v in videos if v.num_frames >= options.span]
        if len(kept) < len(videos):
            logger.warning("%d of %d videos are shorter than a clip (%d frames) and are not used",
                           len(videos) - len(kept), len(videos), options.span)
        if not kept:
            raise ValueError(f"no prepared video has the {options.span} frames a clip needs")
        self.videos = kept
        self.options = options
        self._cache = _VideoCache()
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        """Videos per epoch (the sample stream itself is endless)."""
        return len(self.videos)

    def _video_of(self, index: int) -> int:
        epoch, pos = divmod(int(index), len(self.videos))
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            rng = np.random.default_rng([self.options.seed, _PERM_SALT, epoch])
            self._perms[epoch] = rng.permutation(len(self.videos))
        return int(self._perms[epoch][pos])

    def choose(self, index: int) -> tuple[SampleChoice, np.random.Generator]:
        """The random choices of sample ``index`` and the generator (positioned for the track draw)."""
        o = self.options
        rng = np.random.default_rng([o.seed, int(index)])
        vid = self._video_of(index)
        total = self.videos[vid].num_frames
        start = int(rng.integers(0, total - o.span + 1))
        frames = tuple(range(start, start + o.span, o.frame_stride))
        outside = np.concatenate([np.arange(0, start), np.arange(start + o.span, total)])
        reference = int(rng.choice(outside)) if len(outside) else int(rng.integers(0, total))
        u = rng.random(4)
        joint = bool(u[0] < o.drop_joint_prob)
        blank = bool(u[1] < o.blank_condition_prob) or (joint and o.drop_joint_includes_condition)
        choice = SampleChoice(vid, frames, reference, blank, joint or bool(u[2] < o.drop_clip_prob),
                              joint or bool(u[3] < o.drop_reference_prob))
        return choice, rng

    def __getitem__(self, index: int) -> dict[str, Any]:
        choice, rng = self.choose(index)
        return self.render(choice, rng, index=int(index))

    def render(self, choice: SampleChoice, rng: Optional[np.random.Generator] = None, *,
               index: int = 0, num_tracks: Optional[tuple[int, int]] = None) -> dict[str, Any]:
        """Load and render one sample (see the class docstring for the keys)."""
        o = self.options
        video = self.videos[choice.video]
        geo = Geometry(video.width, video.height, o.width, o.height)
        images = geo.images(video.frames(list(choice.frames) + [choice.reference]))
        poses, tracks = self._cache.get(video)
        pose_maps = np.stack([render_pose(geo.pose(poses[t])) for t in choice.frames])
        track_maps = self._track_maps(tracks, choice.frames, geo, rng, num_tracks or o.tracks_range)
        return {"frames": images[:-1], "reference": images[-1], "pose": pose_maps, "tracks": track_maps,
                "blank": choice.blank, "drop_clip": choice.drop_clip, "drop_reference": choice.drop_reference,
                "index": np.int64(index), "video": np.int64(choice.video),
                "frame_ids": np.asarray(choice.frames, np.int64), "reference_id": np.int64(choice.reference)}

    def _track_maps(self, tracks: Tracks, frames: Sequence[int], geo: Geometry,
                    rng: Optional[np.random.Generator], count: tuple[int, int]) -> np.ndarray:
        o = self.options
        frames = list(frames)
        clip = Tracks(tracks.points[frames], tracks.visible[frames], tracks.width, tracks.height)
        rng = rng if rng is not None else np.random.default_rng(0)
        if o.anchor_tracks:  # only tracks seen in the condition frame: each disc can be followed back to it
            anchored = np.nonzero(clip.visible[0])[0]
            chosen = anchored[select_track_indices(
                Tracks(clip.points[:, anchored], clip.visible[:, anchored], clip.width, clip.height), count, rng)]
        else:
            chosen = select_track_indices(clip, count, rng)
        # the trail reaches back before the clip, as on a whole video at inference (there is no trail
        # before the video's first frame)
        history = [f for f in (frames[0] - k * o.frame_stride for k in range(o.track_trail, 0, -1)) if f >= 0]
        window = history + frames
        moved = Tracks(geo.points(tracks.points[window][:, chosen]), tracks.visible[window][:, chosen],
                       geo.dst_w, geo.dst_h)
        moved = Tracks(moved.points, moved.visible & moved.in_frame(), moved.width, moved.height)
        return render_tracks(moved, radius=o.track_radius or None, trail=o.track_trail)[len(history):]


class StreamSampler(Sampler[int]):
    """Endless global sample indices of one process: micro-step ``m`` -> ``(m * W + r) * B + j``.

    Args:
        rank, world_size: this process and the number of processes.
        batch_size: samples per micro-step and process.
        start: first micro-step (``optimizer steps done x gradient accumulation`` when resuming).
    """

    def __init__(self, rank: int, world_size: int, batch_size: int, start: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.rank, self.world_size, self.batch_size, self.start = rank, world_size, batch_size, start

    def __iter__(self) -> Iterator[int]:
        m = self.start
        while True:
            base = (m * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)
            m += 1

    def __len__(self) -> int:  # pragma: no cover - endless; DataLoader only needs it for len()
        return 2 ** 62


def worker_init(_worker_id: int) -> None:
    """Data-loader workers: one thread each for OpenCV and torch (the workers run in parallel)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def to_model_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 batch -> float tensors on ``device``.

    Returns:
        ``pixels`` ``(B, F, 3, H, W)`` in -1..1, ``reference`` ``(B, 3, H, W)`` in -1..1, ``pose`` /
        ``tracks`` ``(B, 3, F, H, W)`` in 0..1 (what :meth:`MovingBGModel.forward` reads), plus the flags
        as bool tensors, ``index`` and the ``video`` / ``frame_ids`` / ``reference_id`` of each sample.
    """
    def dev(x: torch.Tensor) -> torch.Tensor:
        return x.to(device, non_blocking=True)

    frames = dev(batch["frames"]).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
    ref = dev(batch["reference"]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    pose = dev(batch["pose"]).permute(0, 4, 1, 2, 3).float() / 255.0
    tracks = dev(batch["tracks"]).permute(0, 4, 1, 2, 3).float() / 255.0
    return {"pixels": frames, "reference": ref, "pose": pose, "tracks": tracks,
            "blank": dev(batch["blank"]).bool(), "drop_clip": dev(batch["drop_clip"]).bool(),
            "drop_reference": batch["drop_reference"].bool(), "index": batch["index"].long(),
            "video": batch["video"].long(), "frame_ids": batch["frame_ids"].long(),
            "reference_id": batch["reference_id"].long()}
