"""python -m movingbg.prepare on short synthetic videos (ground-truth pose sidecars), one of them corrupt."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from movingbg import prepare as prep
from movingbg.io.video import read_video, write_video
from movingbg.prepare import PreparedVideo, PrepareOptions, find_pose_sidecar, list_prepared, prepare_folder
from movingbg.preprocess.pose_format import FramePose, PersonPose, to_pose_keypoint
from movingbg.synth.scene import make_clip

SIZE = 64
OPTS = PrepareOptions(width=SIZE, height=SIZE, pose="none", num_points=40)


def write_synthetic(folder: Path, name: str, seed: int, frames: int = 16, fps: float = 12.0, sidecar: bool = True,
                    size: tuple[int, int] = (SIZE, SIZE)):
    """A synthetic clip as mp4 plus its ground-truth POSE_KEYPOINT sidecar; returns the SynthClip."""
    clip = make_clip(seed=seed, num_frames=frames, width=size[0], height=size[1], pan=(1.0, 0.3), zoom=0.0)
    path = folder / f"{name}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, clip.frames, fps, crf=8)
    if sidecar:
        poses = [FramePose(size[0], size[1], (PersonPose(kp),)) for kp in clip.keypoints]
        path.with_suffix(".pose.json").write_text(json.dumps(to_pose_keypoint(poses)))
    return clip


@pytest.fixture()
def videos(tmp_path):
    folder = tmp_path / "videos"
    clips = {"a": write_synthetic(folder, "a", 1), "sub__b": write_synthetic(folder, "sub/b", 2, frames=20)}
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 40)
    (folder / "notes.txt").write_text("not a video either; ignored")
    return folder, clips


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()
            and p.name != prep.FAILED_FILE}


def test_prepare_folder_writes_cache_reports_bad_video_and_rerun_is_noop(videos, tmp_path, caplog):
    folder, clips = videos
    out = tmp_path / "cache"
    report = prepare_folder(folder, out, OPTS, workers=2, progress=False)
    assert sorted(report.done) == ["a", "sub__b"]
    assert [r for r, _ in report.failed] == ["broken.mp4"]
    failed = json.loads((out / "failed.json").read_text())["failed"]
    assert [f["video"] for f in failed] == ["broken.mp4"] and "broken.mp4" in failed[0]["error"]
    assert not list(out.glob("*.tmp"))

    prepared = {v.name: v for v in list_prepared(out)}
    assert sorted(prepared) == ["a", "sub__b"]
    for name, clip in clips.items():
        v = prepared[name]
        assert (v.num_frames, v.width, v.height, v.fps) == (clip.num_frames, SIZE, SIZE, 12.0)
        assert v.meta["pose_source"] == "sidecar" and v.meta["source"].endswith(".mp4")
        for f in ("frames.mp4", "pose.json", "pose.mp4", "alpha.npz", "tracks.npz", "meta.json"):
            assert (v.path / f).is_file(), f
        frames = v.frames(range(v.num_frames)).astype(int)
        source = read_video(folder / v.meta["source"]).frames.astype(int)
        assert np.abs(frames - source).mean() < 2.5  # re-encoded at CRF 12 (4:2:0 chroma on 64 px frames)
        poses = v.poses()
        got = np.stack([fp.people[0].body for fp in poses])
        present = clip.keypoints[..., 2] > 0
        np.testing.assert_allclose(got[..., :2][present], clip.keypoints[..., :2][present], atol=1e-3)
        alpha = v.alpha()
        assert alpha.shape == (v.num_frames, SIZE, SIZE) and alpha.max() > 0.9
        tracks = v.tracks()
        assert tracks.num_frames == v.num_frames and tracks.visible.sum(axis=1).min() >= 5
        xi = np.clip(np.rint(tracks.points[..., 0]), 0, SIZE - 1).astype(int)
        yi = np.clip(np.rint(tracks.points[..., 1]), 0, SIZE - 1).astype(int)
        on_person = alpha[np.arange(v.num_frames)[:, None], yi, xi] >= 0.5
        assert not (on_person & tracks.visible).any(), "M = (1 - alpha) T: no visible track on the person"

    before = _mtimes(out)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="movingbg.prepare"):
        again = prepare_folder(folder, out, OPTS, workers=2, progress=False)
    assert again.done == () and sorted(again.skipped) == ["a", "sub__b"] and again.failed == ()
    assert _mtimes(out) == before, "a second run must not touch finished videos"
    assert "2 already prepared (skipped), 1 failed before" in caplog.text and "0 to do" in caplog.text
    assert [f["video"] for f in json.loads((out / "failed.json").read_text())["failed"]] == ["broken.mp4"]


def test_crash_midway_leaves_no_partial_folder_and_next_run_finishes(videos, tmp_path, monkeypatch):
    folder, _ = videos
    out = tmp_path / "cache"
    real = prep._write_cache
    calls = []

    def flaky(tmp, *args, **kwargs):
        calls.append(tmp.name)
        if len(calls) == 2:
            (tmp / "frames.mp4").write_bytes(b"half written")
            raise KeyboardInterrupt  # Ctrl-C while the second video is being written
        return real(tmp, *args, **kwargs)

    monkeypatch.setattr(prep, "_write_cache", flaky)
    report = prepare_folder(folder, out, OPTS, workers=1, progress=False)
    assert report.interrupted and report.done == ("a",)
    assert [v.name for v in list_prepared(out)] == ["a"]
    assert (out / "sub__b.tmp").is_dir() and not (out / "sub__b").exists()

    monkeypatch.setattr(prep, "_write_cache", real)
    report = prepare_folder(folder, out, OPTS, workers=1, progress=False)
    assert report.done == ("sub__b",) and report.skipped == ("a",)
    assert not (out / "sub__b.tmp").exists() and [v.name for v in list_prepared(out)] == ["a", "sub__b"]


def test_failed_video_is_retried_when_changed_or_asked(videos, tmp_path):
    folder, _ = videos
    out = tmp_path / "cache"
    prepare_folder(folder, out, OPTS, progress=False)
    assert prepare_folder(folder, out, OPTS, progress=False).failed == ()          # skipped, unchanged
    assert len(prepare_folder(folder, out, OPTS, progress=False, retry_failed=True).failed) == 1
    write_synthetic(folder, "broken", 5, sidecar=False)                              # the file was fixed
    report = prepare_folder(folder, out, OPTS, progress=False)
    assert report.done == ("broken",) and report.failed == ()
    assert json.loads((out / "failed.json").read_text())["failed"] == []
    assert PreparedVideo(out / "broken").meta["pose_source"] == "none"


def test_random_access_frames_match_sequential_decode(tmp_path):
    folder = tmp_path / "v"
    write_synthetic(folder, "long", 3, frames=40)
    prepare_folder(folder, tmp_path / "c", PrepareOptions(width=SIZE, height=SIZE, pose="none", gop=4), progress=False)
    video = PreparedVideo(tmp_path / "c" / "long")
    full = read_video(video.path / "frames.mp4").frames
    for idx in ([0], [39], [17, 3, 17, 30], list(range(8, 40, 3))):
        np.testing.assert_array_equal(video.frames(idx), full[idx])
    with pytest.raises(IndexError, match="outside"):
        video.frames([40])


def test_fps_resampling_resizing_and_png_frames_keep_sidecar_pose_aligned(tmp_path):
    folder = tmp_path / "v"
    clip = write_synthetic(folder, "fast", 4, frames=24, fps=24.0, size=(128, 96))
    opts = PrepareOptions(fps=12.0, width=64, height=0, max_frames=10, pose="none", frames_format="png",
                          previews=False)
    prepare_folder(folder, tmp_path / "c", opts, progress=False)
    v = PreparedVideo(tmp_path / "c" / "fast")
    assert (v.num_frames, v.width, v.height, v.fps) == (10, 64, 48, 12.0)
    assert (v.path / "frames" / "000009.png").is_file() and not (v.path / "pose.mp4").exists()
    got = np.stack([fp.people[0].body for fp in v.poses()])
    want = clip.keypoints[0:20:2].copy()
    want[..., :2] *= 0.5
    present = want[..., 2] > 0
    np.testing.assert_allclose(got[..., :2][present], want[..., :2][present], atol=1e-3)
    assert v.frames([3]).shape == (1, 48, 64, 3)


def test_sidecar_lookup_and_short_sidecar_fails_that_video_only(tmp_path):
    folder = tmp_path / "v"
    write_synthetic(folder, "ok", 6, frames=12)
    write_synthetic(folder, "short", 7, frames=12)
    data = json.loads((folder / "short.pose.json").read_text())
    (folder / "short.pose.json").write_text(json.dumps(data[:5]))
    assert find_pose_sidecar(folder / "ok.mp4") == folder / "ok.pose.json"
    (folder / "ok.pose.json").rename(folder / "ok.mp4.pose.json")
    assert find_pose_sidecar(folder / "ok.mp4") == folder / "ok.mp4.pose.json"
    report = prepare_folder(folder, tmp_path / "c", OPTS, progress=False)
    assert report.done == ("ok",)
    assert report.failed[0][0] == "short.mp4" and "has 5 frames, the video needs 12" in report.failed[0][1]


def test_cli_exit_codes_and_missing_model_message(videos, tmp_path, caplog):
    folder, _ = videos
    out = tmp_path / "cache"
    with caplog.at_level(logging.ERROR):
        assert prep.main([str(folder), str(out), "--pose", "dwpose", "--quiet"]) == 2
    assert "det_model (--det) is required" in caplog.text
    assert prep.main([str(tmp_path / "missing"), str(out), "--pose", "none", "--quiet"]) == 2
    args = [str(folder), str(out), "--pose", "none", "--width", "64", "--height", "64", "--quiet", "--no-previews"]
    assert prep.main(args) == 1                       # one video failed
    assert prep.main(args) == 0                       # nothing left to do (the failed one is skipped)


def test_options_validation_names_the_field():
    for kwargs, field in (({"num_points": 0}, "num_points"), ({"pose": "openpose"}, "pose"),
                          ({"fps": -1.0}, "fps"), ({"crf": 60}, "crf"), ({"matte": "sam"}, "matte")):
        with pytest.raises(ValueError, match=field):
            PrepareOptions(**kwargs)
    with pytest.raises(ValueError, match="u2net_model"):
        PrepareOptions(pose="none", matte="u2net").check_paths()


def test_dwpose_with_dummy_onnx_models(tmp_path):
    pytest.importorskip("rtmlib")
    pytest.importorskip("onnx")
    from tests.fixtures.dummy_onnx import make_detector_onnx, make_simcc_pose_onnx, wholebody_template

    folder = tmp_path / "v"
    write_synthetic(folder, "person", 8, frames=6, sidecar=False)
    # 64 px frames are letterboxed x10 into the detector's 640 x 640 input: box (16, 5)-(48, 60) in pixels
    det = make_detector_onnx(tmp_path / "det.onnx", [(160, 50, 480, 600, 0.9)])
    pose = make_simcc_pose_onnx(tmp_path / "pose.onnx", wholebody_template())
    opts = PrepareOptions(width=SIZE, height=SIZE, pose="dwpose", det_model=str(det), pose_model=str(pose))
    report = prepare_folder(folder, tmp_path / "c", opts, progress=False)
    assert report.done == ("person",)
    v = PreparedVideo(tmp_path / "c" / "person")
    assert v.meta["pose_source"] == "dwpose"
    poses = v.poses()
    assert len(poses) == 6 and all(len(fp.people) == 1 for fp in poses)
    body = poses[0].people[0].body
    ok = body[:, 2] > 0
    assert ok.sum() >= 10 and (body[ok, :2] >= 0).all() and (body[ok, :2] <= SIZE - 1).all()


def test_dead_worker_process_is_replaced_and_its_videos_retried(videos, tmp_path, monkeypatch):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tests.fixtures.crashy_prepare import crashy_worker_init

    folder, _ = videos
    marker = tmp_path / "crashed"
    monkeypatch.setattr(prep, "_new_pool", lambda options, workers: ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=crashy_worker_init,
        initargs=(options, 1, str(marker))))
    report = prepare_folder(folder, tmp_path / "cache", OPTS, workers=2, progress=False)
    assert marker.exists(), "the worker was killed once"
    assert sorted(report.done) == ["a", "sub__b"] and [r for r, _ in report.failed] == ["broken.mp4"]


def test_a_script_without_a_main_guard_is_told_why_its_workers_die(tmp_path):
    """Workers are spawned and import the calling script; an unguarded script makes every worker die while
    importing it. The report names that cause, not only memory."""
    import subprocess
    import sys

    for name, seed in (("a", 1), ("b", 2)):
        write_synthetic(tmp_path / "videos", name, seed, frames=6)
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import json, sys\n"
        "from movingbg.prepare import PrepareOptions, prepare_folder\n"
        f"report = prepare_folder({str(tmp_path / 'videos')!r}, {str(tmp_path / 'cache')!r}, "
        "PrepareOptions(width=64, height=64, pose='none', num_points=8), workers=2, progress=False)\n"
        "print(json.dumps(report.failed))\n")
    root = Path(prep.__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert run.returncode == 0, run.stderr[-2000:]
    failed = json.loads(run.stdout.strip().splitlines()[-1])
    assert sorted(video for video, _ in failed) == ["a.mp4", "b.mp4"]
    assert all("if __name__ == '__main__':" in error and "memory" in error for _, error in failed)
