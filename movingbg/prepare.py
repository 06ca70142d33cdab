"""Turn a folder of videos into the training cache that ``python -m movingbg.train`` reads.

    python -m movingbg.prepare VIDEO_DIR OUT_DIR [--fps 0] [--width 0] [--height 512] [--max-frames 0]
        [--num-points 100] [--tracker klt|cotracker3] [--cotracker PATH]
        [--pose dwpose|none] [--det yolox_l.onnx] [--pose-model dw-ll_ucoco_384.onnx]
        [--matte pose_grabcut|u2net] [--u2net u2net_human_seg.onnx] [--frames mp4|png] [--workers N]

Every video file under ``VIDEO_DIR`` (searched recursively; .mp4 .webm .mov .mkv .avi .m4v .gif) becomes
one folder ``OUT_DIR/<name>/`` (``name`` = the path below ``VIDEO_DIR`` without extension, ``/`` -> ``__``):

==================  ===============================================================================
``frames.mp4``      the frames after resampling / resizing: H.264, CRF ``--crf`` (12), a key frame every
                    ``--gop`` (8) frames so a clip can be decoded by seeking (``--frames png``: a folder
                    ``frames/`` of ``000000.png`` ... instead, lossless and larger)
``pose.json``       ``POSE_KEYPOINT`` (comfyui_controlnet_aux layout, pixels of the cached frames), one
                    entry per cached frame
``pose.mp4``        the pose renders (DWPose/ControlNet style), a preview (``--no-previews`` skips it)
``alpha.npz``       ``alpha``: ``(T, H, W)`` uint8 human matte, 255 = person (``np.load``)
``tracks.npz``      ``points`` ``(T, N, 2)`` float32 x, y px; ``visible`` ``(T, N)`` bool, already masked
                    with the matte (M = (1 - alpha) * T); ``width``, ``height``
``meta.json``       ``format`` (``movingbg.prepared/1``), ``num_frames``, ``width``, ``height``, ``fps``,
                    ``source`` and where pose / matte / tracks came from
==================  ===============================================================================

A video is written into ``<name>.tmp/`` and renamed when complete, so a crash or Ctrl-C loses at most
the videos in progress; re-running skips finished folders (and removes stale ``.tmp`` ones). A video
that cannot be read or processed is logged, listed in ``OUT_DIR/failed.json`` (rewritten every run) and
skipped; the run goes on. A video that failed is not retried
on later runs until its file changes (``--retry-failed`` retries it anyway).

Pose source, per video: a sidecar ``<video stem>.pose.json`` (or ``<video file name>.pose.json``) next
to the video, holding ``POSE_KEYPOINT`` for every SOURCE frame, is used as given keypoints (this is how
synthetic data ships its ground truth) and wins over ``--pose``. Otherwise ``--pose dwpose`` runs DWPose
(needs ``--det`` and ``--pose-model``, nothing is downloaded); ``--pose none`` stores frames without
people (a warning; ``--matte pose_grabcut`` then gives an empty matte).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
import traceback
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .io.video import VIDEO_EXTENSIONS, VideoReadError, read_video
from .preprocess.pose_format import FramePose, PersonPose, from_pose_keypoint, to_pose_keypoint
from .types import Tracks

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "PrepareOptions",
    "PrepareReport",
    "PreparedVideo",
    "find_videos",
    "find_pose_sidecar",
    "list_prepared",
    "prepare_video",
    "prepare_folder",
    "main",
]

FORMAT = "movingbg.prepared/1"
"""``meta.json["format"]`` of a cache folder written by this module."""

FAILED_FILE = "failed.json"
TMP_SUFFIX = ".tmp"
_POSE_SOURCES = ("dwpose", "none")
_MATTES = ("pose_grabcut", "u2net")
_TRACKERS = ("klt", "cotracker3")
_FRAME_FORMATS = ("mp4", "png")


# --------------------------------------------------------------------------------------------
# options


@dataclass(frozen=True)
class PrepareOptions:
    """How videos are turned into cache folders (see the module docstring).

    Attributes:
        fps: resample to about this frame rate by keeping every ``round(source_fps / fps)``-th frame
            (0 = keep every frame).
        width, height: resize (0 keeps the aspect ratio from the other side; both 0 = keep the size);
            rounded down to multiples of 8.
        max_frames: keep at most this many frames per video (0 = all).
        num_points: background tracks kept alive by the tracker (training later picks 5-50 of them).
        min_distance: minimum spacing of seeded track points in px (0 = ``max(4, min(W, H) / 32)``).
        tracker: ``"klt"`` (OpenCV, no weights) or ``"cotracker3"`` (needs ``cotracker_model``).
        cotracker_model: CoTracker3 ``scaled_offline.pth``.
        pose: ``"dwpose"`` (needs ``det_model`` / ``pose_model``) or ``"none"``; a sidecar
            ``<video>.pose.json`` always wins.
        det_model, pose_model: DWPose ``yolox_l.onnx`` and ``dw-ll_ucoco_384.onnx``.
        matte: ``"pose_grabcut"`` (offline, seeded by the skeleton) or ``"u2net"`` (needs ``u2net_model``).
        u2net_model: ``u2net_human_seg.onnx``.
        matte_grow: dilate the matte by this many px before masking the tracks (keeps them off the edge).
        frames_format: ``"mp4"`` (H.264) or ``"png"``.
        crf: H.264 quality of ``frames.mp4`` (0 = lossless in luma, 12 = visually lossless).
        gop: key-frame interval of ``frames.mp4`` (smaller = faster random access, larger files).
        previews: also write ``pose.mp4`` (pose renders).
        device: ``"cpu"`` / ``"cuda"`` for DWPose, U^2-Net and CoTracker3.
        seed: seed of the track seeding.
    """

    fps: float = 0.0
    width: int = 0
    height: int = 512
    max_frames: int = 0
    num_points: int = 100
    min_distance: float = 0.0
    tracker: str = "klt"
    cotracker_model: Optional[str] = None
    pose: str = "dwpose"
    det_model: Optional[str] = None
    pose_model: Optional[str] = None
    matte: str = "pose_grabcut"
    u2net_model: Optional[str] = None
    matte_grow: int = 2
    frames_format: str = "mp4"
    crf: int = 12
    gop: int = 8
    previews: bool = True
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "height", "max_frames", "matte_grow", "crf", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or (value < 0 and name != "matte_grow"):
                raise ValueError(f"PrepareOptions.{name} must be an int >= 0, got {value!r}")
        for name in ("num_points", "gop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PrepareOptions.{name} must be an int >= 1, got {value!r}")
        for name in ("fps", "min_distance"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"PrepareOptions.{name} must be >= 0, got {getattr(self, name)!r}")
        for name, allowed in (("tracker", _TRACKERS), ("pose", _POSE_SOURCES), ("matte", _MATTES),
                              ("frames_format", _FRAME_FORMATS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"PrepareOptions.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.crf > 51:
            raise ValueError(f"PrepareOptions.crf must be in 0..51, got {self.crf}")

    def check_paths(self) -> None:
        """Raise ValueError naming the option when a model file that the options need is missing."""
        needed = []
        if self.pose == "dwpose":
            needed += [("det_model", "--det"), ("pose_model", "--pose-model")]
        if self.matte == "u2net":
            needed.append(("u2net_model", "--u2net"))
        if self.tracker == "cotracker3":
            needed.append(("cotracker_model", "--cotracker"))
        for name, flag in needed:
            value = getattr(self, name)
            if not value:
                raise ValueError(f"{name} ({flag}) is required by the chosen options; nothing is downloaded")
            if not Path(value).is_file():
                raise ValueError(f"{name} ({flag}): file not found: {value}")


@dataclass(frozen=True)
class PrepareReport:
    """Outcome of :func:`prepare_folder`.

    Attributes:
        done: cache folders written by this run.
        skipped: names already prepared before this run.
        failed: ``(video path relative to the video folder, error message)``.
        interrupted: the run was stopped (Ctrl-C) before every video was processed.
    """

    done: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()
    interrupted: bool = False


# --------------------------------------------------------------------------------------------
# reading a cache folder


class PreparedVideo:
    """Read access to one finished cache folder.

    Args:
        path: the folder (holding ``meta.json``).

    Raises:
        ValueError: not a finished cache folder of this format.
    """

    def __init__(self, path: os.PathLike | str) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise ValueError(f"{self.path} is not a prepared video (no meta.json)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format {self.meta.get('format')!r} is not {FORMAT!r}")
        self.name = self.path.name
        self.num_frames = int(self.meta["num_frames"])
        self.width = int(self.meta["width"])
        self.height = int(self.meta["height"])
        self.fps = float(self.meta["fps"])

    def __repr__(self) -> str:
        return f"PreparedVideo({self.name!r}, {self.num_frames} frames {self.width}x{self.height})"

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at the given indices (any order, repeats allowed).

        Returns:
            ``(K, H, W, 3)`` uint8 RGB.
        """
        idx = [int(i) for i in indices]
        bad = [i for i in idx if not 0 <= i < self.num_frames]
        if bad:
            raise IndexError(f"{self.name}: frame indices {bad} outside 0..{self.num_frames - 1}")
        folder = self.path / "frames"
        if folder.is_dir():
            from PIL import Image

            out = []
            for i in idx:
                with Image.open(folder / f"{i:06d}.png") as im:
                    out.append(np.asarray(im.convert("RGB")))
            return np.stack(out)
        found = _decode_indices(self.path / "frames.mp4", sorted(set(idx)))
        return np.stack([found[i] for i in idx])

    def poses(self) -> list[FramePose]:
        """One :class:`FramePose` per frame (pixels of the cached frames)."""
        return from_pose_keypoint(json.loads((self.path / "pose.json").read_text(encoding="utf-8")),
                                  normalized=False)

    def tracks(self) -> Tracks:
        """The masked background tracks of the whole video."""
        with np.load(self.path / "tracks.npz") as z:
            return Tracks(z["points"], z["visible"], int(z["width"]), int(z["height"]))

    def alpha(self) -> np.ndarray:
        """``(T, H, W)`` float32 human matte in 0..1."""
        with np.load(self.path / "alpha.npz") as z:
            return z["alpha"].astype(np.float32) / 255.0


def list_prepared(data_dir: os.PathLike | str) -> list[PreparedVideo]:
    """Finished cache folders directly under ``data_dir``, sorted by name (``.tmp`` folders ignored)."""
    root = Path(data_dir)
    out = []
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if p.is_dir() and not p.name.endswith(TMP_SUFFIX) and (p / "meta.json").is_file():
            try:
                out.append(PreparedVideo(p))
            except (ValueError, KeyError, json.JSONDecodeError) as exc:
                logger.warning("ignoring %s: %s", p, exc)
    return out


def _decode_indices(path: Path, wanted: list[int]) -> dict[int, np.ndarray]:
    """Decode the frames ``wanted`` (sorted, unique) of a constant-rate video by seeking to key frames.

    Contiguous runs are decoded after one seek each (to the key frame before the run); frames are
    identified by their presentation time. Falls back to decoding from the start if seeking misses.
    """
    import av

    found: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate, tb, start = stream.average_rate, stream.time_base, stream.start_time or 0
        for run in _runs(wanted):
            container.seek(int(round(Fraction(run[0]) / rate / tb)) + start, stream=stream, backward=True)
            _decode_run(container, stream, set(run), run[-1], found, (rate, tb, start))
        missing = [i for i in wanted if i not in found]
        if missing:
            logger.debug("%s: seeking missed frames %s; decoding from the start", path, missing[:5])
            container.seek(start, stream=stream, backward=True)
            _decode_run(container, stream, set(missing), missing[-1], found, (rate, tb, start))
    missing = [i for i in wanted if i not in found]
    if missing:
        raise VideoReadError(f"{path}: frames {missing[:10]} could not be decoded")
    return found


def _runs(sorted_idx: list[int], gap: int = 16) -> list[list[int]]:
    """Split sorted indices into runs whose neighbours are at most ``gap`` apart."""
    runs: list[list[int]] = []
    for i in sorted_idx:
        if runs and i - runs[-1][-1] <= gap:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _decode_run(container, stream, want: set[int], last: int, found: dict[int, np.ndarray], timing) -> None:
    rate, tb, start = timing
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        k = int(round((frame.pts - start) * tb * rate))
        if k in want and k not in found:
            found[k] = frame.to_ndarray(format="rgb24")
        if k >= last:
            break


# --------------------------------------------------------------------------------------------
# finding videos


def find_videos(video_dir: os.PathLike | str) -> list[Path]:
    """Video files below ``video_dir`` (recursive), sorted; hidden files and ``*.tmp`` paths skipped."""
    root = Path(video_dir)
    if not root.is_dir():
        raise ValueError(f"VIDEO_DIR is not a folder: {root}")
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            out.append(p)
    return sorted(out)


def _cache_names(videos: Sequence[Path], root: Path) -> list[str]:
    """Unique folder names: relative path without extension, ``/`` -> ``__`` (extension added on clashes)."""
    base = ["__".join(v.relative_to(root).with_suffix("").parts) for v in videos]
    base = [b[: -len(TMP_SUFFIX)] + "_tmp" if b.endswith(TMP_SUFFIX) else b for b in base]
    counts: dict[str, int] = {}
    for b in base:
        counts[b] = counts.get(b, 0) + 1
    return [b if counts[b] == 1 else f"{b}_{v.suffix.lower().lstrip('.')}" for b, v in zip(base, videos, strict=True)]


def find_pose_sidecar(video: os.PathLike | str) -> Optional[Path]:
    """``<stem>.pose.json`` or ``<file name>.pose.json`` next to the video, if present."""
    v = Path(video)
    for cand in (v.with_suffix(".pose.json"), v.with_name(v.name + ".pose.json")):
        if cand.is_file():
            return cand
    return None


# --------------------------------------------------------------------------------------------
# per-video processing


class _Tools:
    """Models loaded once per process (DWPose, U^2-Net, CoTracker3), created lazily."""

    def __init__(self, options: PrepareOptions) -> None:
        self.options = options
        self._dwpose = None
        self._u2net = None
        self._cotracker = None

    def dwpose(self):
        if self._dwpose is None:
            from .preprocess.pose import DWPoseEstimator

            self._dwpose = DWPoseEstimator(self.options.det_model, self.options.pose_model, device=self.options.device)
        return self._dwpose

    def u2net(self):
        if self._u2net is None:
            from .preprocess.matte import U2NetHumanSeg

            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if "cuda" in self.options.device else None
            self._u2net = U2NetHumanSeg(self.options.u2net_model, providers=providers)
        return self._u2net

    def cotracker(self):
        if self._cotracker is None:
            from .preprocess.cotracker import load_cotracker3

            self._cotracker = load_cotracker3(self.options.cotracker_model)
        return self._cotracker


def _probe_fps(path: Path) -> float:
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoReadError(f"video '{path.name}' has no video stream")
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate or s.base_rate
            return float(rate) if rate else 0.0
    except VideoReadError:
        raise
    except Exception as exc:  # PyAV raises several error types for unreadable input
        raise VideoReadError(f"video '{path.name}' could not be opened as a video: {exc}") from exc


def _load_frames(video: Path, options: PrepareOptions) -> tuple[np.ndarray, float, int, float]:
    """``(frames (T, H, W, 3) uint8, fps, every_nth, source_fps)`` after resampling and resizing."""
    source_fps = _probe_fps(video)
    every = 1
    if options.fps > 0 and source_fps > 0:
        every = max(1, int(round(source_fps / options.fps)))
    vf = read_video(video, max_frames=options.max_frames, every_nth=every, width=options.width,
                    height=options.height)
    fps = vf.fps if vf.fps > 0 else (options.fps or 24.0)
    return vf.frames, fps, every, source_fps


def _sidecar_poses(sidecar: Path, count: int, every: int, size: tuple[int, int]) -> list[FramePose]:
    """Poses of the kept source frames ``0, every, 2 * every ...``, scaled to ``size`` = (W, H)."""
    poses = from_pose_keypoint(json.loads(sidecar.read_text(encoding="utf-8")))
    need = (count - 1) * every + 1
    if len(poses) < need:
        raise ValueError(f"pose sidecar {sidecar.name} has {len(poses)} frames, the video needs {need}")
    w, h = size
    out = []
    for fp in poses[: need : every]:
        s = np.array([w / fp.width, h / fp.height, 1.0], np.float32)
        people = tuple(PersonPose(**{k: (None if v is None else v * s) for k, v in p.parts().items()})
                       for p in fp.people)
        out.append(FramePose(w, h, people))
    return out


def _estimate_poses(video: Path, frames: np.ndarray, every: int, tools: _Tools) -> tuple[list[FramePose], str]:
    """Sidecar keypoints, else DWPose, else empty poses; plus the source name for meta.json."""
    h, w = frames.shape[1:3]
    sidecar = find_pose_sidecar(video)
    if sidecar is not None:
        return _sidecar_poses(sidecar, len(frames), every, (w, h)), "sidecar"
    if tools.options.pose == "dwpose":
        return tools.dwpose().estimate_video(frames), "dwpose"
    logger.warning("%s: no pose sidecar and --pose none: storing frames without people", video.name)
    return [FramePose(w, h, ()) for _ in range(len(frames))], "none"


def _matte(frames: np.ndarray, poses: list[FramePose], tools: _Tools) -> np.ndarray:
    """``(T, H, W)`` float32 alpha (grown by ``matte_grow``)."""
    from .preprocess.matte import matte_from_pose, refine_matte

    if tools.options.matte == "u2net":
        alpha = tools.u2net()(frames)
    else:
        alpha = matte_from_pose(frames, [[p.body for p in fp.people] for fp in poses])
    return refine_matte(alpha, grow=tools.options.matte_grow) if tools.options.matte_grow else alpha


def _track(frames: np.ndarray, alpha: np.ndarray, tools: _Tools) -> Tracks:
    from .preprocess.tracks import make_queries, track_klt, track_points_to_tracks

    o = tools.options
    h, w = frames.shape[1:3]
    min_dist = float(o.min_distance) or max(4.0, min(w, h) / 32.0)
    if o.tracker == "klt":
        return track_klt(frames, alpha, num_points=o.num_points, min_distance=min_dist, seed=o.seed)
    from .preprocess.cotracker import track_points

    queries = make_queries(alpha, o.num_points, min_dist, every=8, frames=frames, seed=o.seed)
    if len(queries) == 0:
        return Tracks(np.zeros((len(frames), 0, 2), np.float32), np.zeros((len(frames), 0), bool), w, h)
    points, visible = track_points(tools.cotracker(), frames, queries, device=o.device)
    return track_points_to_tracks(points, visible, w, h, alpha=alpha, queries=queries, hide_before_query=True)


def _write_mp4(path: Path, frames: np.ndarray, fps: float, crf: int, gop: int) -> None:
    """H.264 yuv420p with a key frame every ``gop`` frames (for seeking)."""
    import av

    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = int(gop)
        stream.options = {"crf": str(crf), "keyint_min": str(gop), "sc_threshold": "0"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _write_frames(folder: Path, frames: np.ndarray, fps: float, options: PrepareOptions) -> str:
    if options.frames_format == "png":
        from PIL import Image

        (folder / "frames").mkdir()
        for i, f in enumerate(frames):
            Image.fromarray(f).save(folder / "frames" / f"{i:06d}.png", compress_level=1)
        return "frames/"
    _write_mp4(folder / "frames.mp4", frames, fps, options.crf, options.gop)
    return "frames.mp4"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _write_cache(tmp: Path, frames: np.ndarray, fps: float, poses: list[FramePose], alpha: np.ndarray,
                 tracks: Tracks, options: PrepareOptions) -> str:
    """All files except meta.json; returns the frames entry (``frames.mp4`` / ``frames/``)."""
    from .preprocess.pose_render import render_poses

    entry = _write_frames(tmp, frames, fps, options)
    _write_json(tmp / "pose.json", to_pose_keypoint(poses, include_feet=True))
    if options.previews:
        _write_mp4(tmp / "pose.mp4", render_poses(poses), fps, 18, 32)
    np.savez_compressed(tmp / "alpha.npz", alpha=np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8))
    np.savez_compressed(tmp / "tracks.npz", points=tracks.points, visible=tracks.visible,
                        width=np.int64(tracks.width), height=np.int64(tracks.height))
    return entry


def prepare_video(video: os.PathLike | str, out_dir: os.PathLike | str, name: str,
                  options: PrepareOptions, tools: Optional[_Tools] = None, *, source: str = "") -> Path:
    """Process one video into ``out_dir/name`` (atomically, through ``out_dir/name.tmp``).

    Args:
        video: the video file.
        out_dir: the cache root.
        name: folder name of this video.
        options: :class:`PrepareOptions`.
        tools: loaded models to reuse (created on demand when None).
        source: recorded in meta.json (default: the video path).

    Returns:
        the finished folder.

    Raises:
        VideoReadError: the video cannot be read; ValueError: bad pose sidecar; others from the tools.
    """
    t0 = time.monotonic()
    video, out_dir = Path(video), Path(out_dir)
    tools = tools or _Tools(options)
    frames, fps, every, source_fps = _load_frames(video, options)
    poses, pose_source = _estimate_poses(video, frames, every, tools)
    alpha = _matte(frames, poses, tools)
    tracks = _track(frames, alpha, tools)
    final, tmp = out_dir / name, out_dir / (name + TMP_SUFFIX)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    entry = _write_cache(tmp, frames, fps, poses, alpha, tracks, options)
    h, w = frames.shape[1:3]
    meta = {"format": FORMAT, "name": name, "source": source or str(video), "num_frames": int(len(frames)),
            "width": int(w), "height": int(h), "fps": float(fps), "source_fps": float(source_fps),
            "every_nth": int(every), "frames": entry, "pose_source": pose_source, "matte": options.matte,
            "tracker": options.tracker, "num_tracks": tracks.num_tracks,
            "options": asdict(options), "seconds": round(time.monotonic() - t0, 3)}
    _write_json(tmp / "meta.json", meta)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


# --------------------------------------------------------------------------------------------
# folder driver

_WORKER_TOOLS: Optional[_Tools] = None


def _init_worker(options: PrepareOptions, threads: int) -> None:
    """Worker start-up: share the cores between workers (torch reads OMP_NUM_THREADS when imported)."""
    global _WORKER_TOOLS
    import cv2

    os.environ["OMP_NUM_THREADS"] = str(threads)
    cv2.setNumThreads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    _WORKER_TOOLS = _Tools(options)


def _run_one(video: str, out_dir: str, name: str, rel: str, options: PrepareOptions) -> tuple[str, str, Optional[str]]:
    """Worker entry: ``(name, rel, error or None)``; never raises."""
    tools = _WORKER_TOOLS or _Tools(options)
    try:
        prepare_video(video, out_dir, name, options, tools, source=rel)
        return name, rel, None
    except Exception as exc:  # a bad video must never stop the run
        logger.debug("%s failed:\n%s", rel, traceback.format_exc())
        return name, rel, f"{type(exc).__name__}: {exc}"


@dataclass
class _Progress:
    bar: Any
    done: list = field(default_factory=list)
    failed: list = field(default_factory=list)

    def record(self, result: tuple[str, str, Optional[str]]) -> None:
        name, rel, error = result
        if error is None:
            self.done.append(name)
        else:
            logger.error("failed: %s: %s", rel, error)
            self.failed.append((rel, error))
        self.bar.update(1)
        self.bar.set_postfix(failed=len(self.failed), refresh=False)


def _run_serial(tasks: list[tuple], options: PrepareOptions, progress: _Progress) -> None:
    tools = _Tools(options)
    for video, out_dir, name, rel in tasks:
        try:
            prepare_video(video, out_dir, name, options, tools, source=rel)
            progress.record((name, rel, None))
        except Exception as exc:  # a bad video must never stop the run
            logger.debug("%s failed:\n%s", rel, traceback.format_exc())
            progress.record((name, rel, f"{type(exc).__name__}: {exc}"))


_MAX_ATTEMPTS = 3


def _new_pool(options: PrepareOptions, workers: int) -> ProcessPoolExecutor:
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(options, threads))


def _run_pool(tasks: list[tuple], options: PrepareOptions, workers: int, progress: _Progress) -> None:
    """Run the tasks in worker processes. A worker that dies (e.g. killed for memory) breaks the pool: a new
    pool is started and every video that was in flight is retried (a video in flight during
    ``_MAX_ATTEMPTS`` such deaths is reported as failed)."""
    pool = _new_pool(options, workers)
    pending: dict[Future, tuple] = {}
    queue, attempts = deque(tasks), Counter()
    try:
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                task = queue.popleft()
                pending[pool.submit(_run_one, *task, options)] = task
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            broken = []
            for fut in finished:
                try:
                    progress.record(fut.result())
                except BrokenProcessPool:
                    broken.append(pending[fut])
                else:
                    del pending[fut]
            if broken:
                in_flight = list(pending.values())
                pending.clear()
                _retry_after_crash(in_flight, attempts, queue, progress)
                pool.shutdown(wait=False, cancel_futures=True)
                pool = _new_pool(options, workers)
    finally:
        pool.shutdown(wait=not queue and not pending, cancel_futures=True)


def _retry_after_crash(in_flight: list[tuple], attempts: Counter, queue: deque, progress: _Progress) -> None:
    logger.warning("a worker process died; restarting the pool and retrying %d video(s)", len(in_flight))
    for task in in_flight:
        attempts[task] += 1
        if attempts[task] >= _MAX_ATTEMPTS:
            progress.record((task[2], task[3], f"a worker process died {attempts[task]} times while preparing "
                                               "this video (killed for memory? its own error, if any, is printed "
                                               "above; a script that calls prepare_folder with workers > 1 must "
                                               "keep its top-level code under `if __name__ == '__main__':`, as "
                                               "the workers are spawned and import it)"))
        else:
            queue.appendleft(task)


def _clean_stale(out_dir: Path) -> None:
    for p in out_dir.glob("*" + TMP_SUFFIX):
        if p.is_dir():
            logger.info("removing unfinished %s", p.name)
            shutil.rmtree(p, ignore_errors=True)


def _video_key(video: Path) -> list:
    st = video.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def _previous_failures(out: Path) -> dict[str, dict]:
    """Entries of the last run's failed.json by video path (empty when unreadable)."""
    try:
        data = json.loads((out / FAILED_FILE).read_text(encoding="utf-8"))
        return {e["video"]: e for e in data.get("failed", []) if isinstance(e, dict) and "video" in e}
    except (OSError, ValueError, AttributeError):
        return {}


def _plan(root: Path, out: Path, overwrite: bool, retry_failed: bool):
    """``(tasks, skipped names, still-failed entries)`` for this run."""
    videos = find_videos(root)
    names = _cache_names(videos, root)
    finished = {v.name for v in list_prepared(out)} if not overwrite else set()
    previous = {} if retry_failed else _previous_failures(out)
    tasks, skipped, still_failed = [], [], []
    for video, name in zip(videos, names, strict=True):
        rel = str(video.relative_to(root))
        if name in finished:
            skipped.append(name)
        elif rel in previous and previous[rel].get("key") == _video_key(video):
            still_failed.append(previous[rel])
        else:
            tasks.append((str(video), str(out), name, rel))
    logger.info("%d videos in %s: %d already prepared (skipped), %d failed before (skipped; --retry-failed "
                "retries them), %d to do", len(videos), root, len(skipped), len(still_failed), len(tasks))
    return tasks, tuple(skipped), still_failed


def prepare_folder(video_dir: os.PathLike | str, out_dir: os.PathLike | str, options: PrepareOptions, *,
                   workers: int = 1, progress: bool = True, overwrite: bool = False,
                   retry_failed: bool = False) -> PrepareReport:
    """Prepare every video under ``video_dir`` into ``out_dir`` (see the module docstring).

    Args:
        workers: processes (1 = in this process; each worker loads its own models).
        progress: show a tqdm bar (videos, ETA).
        overwrite: redo videos that are already prepared.
        retry_failed: retry videos listed in the previous ``failed.json`` (by default a video that failed
            is skipped until its file changes).

    Returns:
        :class:`PrepareReport` (``failed`` = this run's failures). ``out_dir/failed.json`` lists every
        video that is not prepared because it failed (this run or, unchanged, an earlier one).

    Raises:
        ValueError: ``video_dir`` missing or a model file the options need is missing.
    """
    from tqdm.auto import tqdm

    options.check_paths()
    root, out = Path(video_dir), Path(out_dir)
    if not root.is_dir():
        raise ValueError(f"VIDEO_DIR is not a folder: {root}")
    out.mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    tasks, skipped, still_failed = _plan(root, out, overwrite, retry_failed)
    state = _Progress(tqdm(total=len(tasks), unit="video", desc="prepare", disable=not progress or not tasks))
    interrupted = False
    try:
        if workers > 1 and len(tasks) > 1:
            _run_pool(tasks, options, min(workers, len(tasks)), state)
        else:
            _run_serial(tasks, options, state)
    except KeyboardInterrupt:
        interrupted = True
        logger.warning("interrupted: %d videos finished this run; run again to continue", len(state.done))
    finally:
        state.bar.close()
        new = [{"video": r, "error": e, "key": _video_key(root / r)} for r, e in state.failed if (root / r).exists()]
        _write_json(out / FAILED_FILE, {"failed": still_failed + new})
    return PrepareReport(tuple(state.done), skipped, tuple(state.failed), interrupted)


# --------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    d = PrepareOptions()
    ap = argparse.ArgumentParser(prog="python -m movingbg.prepare", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video_dir", type=Path, help="folder of videos (searched recursively)")
    ap.add_argument("out_dir", type=Path, help="cache folder (one sub-folder per video)")
    ap.add_argument("--fps", type=float, default=d.fps, help="resample to about this fps (0 = keep)")
    ap.add_argument("--width", type=int, default=d.width, help="resize width (0 = from height and aspect)")
    ap.add_argument("--height", type=int, default=d.height, help="resize height (0 = from width and aspect)")
    ap.add_argument("--max-frames", type=int, default=d.max_frames, help="frames per video (0 = all)")
    ap.add_argument("--num-points", type=int, default=d.num_points, help="background tracks kept alive")
    ap.add_argument("--min-distance", type=float, default=d.min_distance, help="track spacing px (0 = auto)")
    ap.add_argument("--tracker", choices=_TRACKERS, default=d.tracker)
    ap.add_argument("--cotracker", default=None, help="CoTracker3 scaled_offline.pth (--tracker cotracker3)")
    ap.add_argument("--pose", choices=_POSE_SOURCES, default=d.pose,
                    help="pose source when a video has no <video>.pose.json sidecar")
    ap.add_argument("--det", default=None, help="DWPose detector yolox_l.onnx")
    ap.add_argument("--pose-model", default=None, help="DWPose pose model dw-ll_ucoco_384.onnx")
    ap.add_argument("--matte", choices=_MATTES, default=d.matte)
    ap.add_argument("--u2net", default=None, help="u2net_human_seg.onnx (--matte u2net)")
    ap.add_argument("--matte-grow", type=int, default=d.matte_grow, help="grow the matte by N px")
    ap.add_argument("--frames", choices=_FRAME_FORMATS, default=d.frames_format, help="how frames are stored")
    ap.add_argument("--crf", type=int, default=d.crf, help="H.264 quality of frames.mp4")
    ap.add_argument("--gop", type=int, default=d.gop, help="key-frame interval of frames.mp4")
    ap.add_argument("--no-previews", action="store_true", help="skip pose.mp4")
    ap.add_argument("--device", default=d.device, help="cpu or cuda (DWPose, U^2-Net, CoTracker3)")
    ap.add_argument("--workers", type=int, default=1, help="parallel processes")
    ap.add_argument("--overwrite", action="store_true", help="redo videos that are already prepared")
    ap.add_argument("--retry-failed", action="store_true", help="retry videos listed in failed.json")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns 0 when every video was prepared, 1 when some failed, 2 on bad options."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        options = PrepareOptions(
            fps=args.fps, width=args.width, height=args.height, max_frames=args.max_frames,
            num_points=args.num_points, min_distance=args.min_distance, tracker=args.tracker,
            cotracker_model=args.cotracker, pose=args.pose, det_model=args.det, pose_model=args.pose_model,
            matte=args.matte, u2net_model=args.u2net, matte_grow=args.matte_grow, frames_format=args.frames,
            crf=args.crf, gop=args.gop, previews=not args.no_previews, device=args.device)
        report = prepare_folder(args.video_dir, args.out_dir, options, workers=max(1, args.workers),
                                progress=not args.quiet, overwrite=args.overwrite,
                                retry_failed=args.retry_failed)
    except ValueError as exc:
        logger.error("error: %s", exc)
        return 2
    logger.info("prepared %d, skipped %d, failed %d%s", len(report.done), len(report.skipped), len(report.failed),
                f" (listed in {Path(args.out_dir) / FAILED_FILE})" if report.failed else "")
    if report.interrupted:
        return 130
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
