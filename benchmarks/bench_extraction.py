"""Motion-extraction throughput and peak memory on this machine (issue: foundation & motion extraction).

    python benchmarks/bench_extraction.py [--frames 32] [--size 512]

Each stage runs in its own process (so peak RSS is its own): KLT tracking, CoTracker3 tracking
(random weights: same compute as the real checkpoint), DWPose through rtmlib/onnxruntime with the
test-size stand-in ONNX models (the real models are larger: these figures time our pipeline,
not the networks), the pose-seeded GrabCut matte, and the pose renderer. Prints frames/s, peak RSS
and the ratio of each stage to KLT, all measured side by side in this one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _clip(frames: int, size: int):
    from movingbg.synth.scene import make_clip

    return make_clip(seed=1, num_frames=frames, width=size, height=size, pan=(2.0, 0.5), zoom=0.005)


def stage(name: str, frames: int, size: int) -> dict:
    clip = _clip(frames, size)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if name == "klt":
        from movingbg.preprocess.tracks import track_klt

        track_klt(clip.frames, clip.alpha, num_points=50)
    elif name == "cotracker3":
        import torch

        from movingbg.models.cotracker3 import CoTracker3Offline
        from movingbg.preprocess.cotracker import track_points
        from movingbg.preprocess.tracks import make_queries

        torch.manual_seed(0)
        model = CoTracker3Offline().eval()
        queries = make_queries(clip.alpha, 50, 16, frames=clip.frames)
        t0 = time.perf_counter()
        track_points(model, clip.frames, queries)
    elif name == "dwpose":
        from movingbg.preprocess.pose import DWPoseEstimator
        from tests.fixtures.dummy_onnx import make_detector_onnx, make_simcc_pose_onnx, wholebody_template

        tmp = Path(tempfile.mkdtemp())
        det = make_detector_onnx(tmp / "det.onnx", [(200, 100, 440, 600, 0.9)])
        pose = make_simcc_pose_onnx(tmp / "pose.onnx", wholebody_template())
        est = DWPoseEstimator(det, pose)
        t0 = time.perf_counter()
        est.estimate_video(clip.frames)
    elif name == "matte_pose_grabcut":
        from movingbg.preprocess.matte import matte_from_pose

        matte_from_pose(clip.frames, [[k] for k in clip.keypoints])
    elif name == "render_pose":
        from movingbg.preprocess.pose_format import FramePose, PersonPose
        from movingbg.preprocess.pose_render import render_poses

        render_poses([FramePose(size, size, (PersonPose(k),)) for k in clip.keypoints])
    else:
        raise SystemExit(f"unknown stage {name}")
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"stage": name, "seconds": dt, "fps": frames / dt, "peak_rss_mib": peak / 1024,
            "stage_rss_mib": (peak - base) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--stages", default="klt,cotracker3,dwpose,matte_pose_grabcut,render_pose")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.stage:
        print(json.dumps(stage(a.stage, a.frames, a.size)))
        return
    rows = []
    for name in a.stages.split(","):
        out = subprocess.run([sys.executable, __file__, "--stage", name, "--frames", str(a.frames),
                              "--size", str(a.size)], capture_output=True, text=True)
        if out.returncode:
            print(f"{name}: failed\n{out.stderr[-2000:]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    klt = next((r for r in rows if r["stage"] == "klt"), None)
    print(f"{a.frames} frames at {a.size}x{a.size}, {len(rows)} stages, each in its own process")
    print(f"{'stage':22s} {'frames/s':>10s} {'s/frame':>9s} {'peak RSS MiB':>13s} {'x KLT time':>11s}")
    for r in rows:
        ratio = r["seconds"] / klt["seconds"] if klt else float("nan")
        print(f"{r['stage']:22s} {r['fps']:10.2f} {r['seconds'] / a.frames:9.4f} {r['peak_rss_mib']:13.0f} {ratio:11.1f}")


if __name__ == "__main__":
    main()
