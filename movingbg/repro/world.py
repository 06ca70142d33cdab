"""The synthetic world of the miniature reproduction: seeded clips with varied camera moves.

Every clip's camera (pan, zoom, rotation) and figure size are drawn from its seed, so a seed range
is a dataset split: training seeds ``0 .. n-1``, test seeds from :data:`TEST_SEED0` on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..synth.scene import SynthClip, make_clip

__all__ = ["TEST_SEED0", "camera_of", "world_clip", "write_videos"]

TEST_SEED0 = 100_000
"""First seed of the test split (training uses 0 .. n-1)."""


def camera_of(seed: int, size: int) -> dict:
    """Camera move, figure size and figure sway of clip ``seed`` (scaled to the frame ``size``).

    The motion is strong on purpose: in an 8-frame clip at 64 px the figure crosses up to ~25 px and
    the background up to ~16 px (2-3 cells of the 8 x 8 latent), so following the driving motion
    is worth much more to the model than copying the first frame."""
    rng = np.random.default_rng([int(seed), 7])
    speed = size / 64.0
    kind = rng.integers(0, 4)  # pan / zoom / rotation / mixed, evenly
    pan = rng.uniform(-2.0, 2.0, 2) * speed if kind in (0, 3) else rng.uniform(-0.4, 0.4, 2) * speed
    zoom = float(rng.uniform(-0.015, 0.015)) if kind in (1, 3) else 0.0
    rot = float(rng.uniform(-0.8, 0.8)) if kind in (2, 3) else 0.0
    return {"pan": (float(pan[0]), float(pan[1])), "zoom": zoom, "rotation_deg": rot,
            "figure_height": float(rng.uniform(0.55, 0.8)), "sway": float(rng.uniform(0.12, 0.25)),
            "sway_period": float(rng.uniform(20.0, 32.0))}


def world_clip(seed: int, num_frames: int, size: int, figure: bool = True) -> SynthClip:
    """Clip ``seed`` of the world at ``size x size`` pixels (``figure=False``: the same background and camera
    without the figure)."""
    return make_clip(seed=int(seed), num_frames=int(num_frames), width=int(size), height=int(size),
                     figure=bool(figure), **camera_of(seed, size))


def write_videos(folder: os.PathLike | str, seeds: Iterable[int], num_frames: int, size: int,
                 fps: float = 12.0) -> list[Path]:
    """Write ``clip<seed>.mp4`` (near-lossless H.264) and its ground-truth ``clip<seed>.pose.json`` sidecar
    (OpenPose keypoints, read by ``python -m movingbg.prepare``) for every seed; existing ones are kept."""
    from ..io.video import write_video
    from ..preprocess.pose_format import FramePose, PersonPose, to_pose_keypoint

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        video = out / f"clip{int(seed):06d}.mp4"
        sidecar = video.with_suffix(".pose.json")
        if not (video.is_file() and sidecar.is_file()):
            clip = world_clip(seed, num_frames, size)
            poses = [FramePose(size, size, (PersonPose(kp),)) for kp in clip.keypoints]
            tmp = sidecar.with_name(sidecar.name + ".tmp")
            tmp.write_text(json.dumps(to_pose_keypoint(poses)))
            write_video(video, clip.frames, fps, crf=4)
            os.replace(tmp, sidecar)
        paths.append(video)
    return paths
