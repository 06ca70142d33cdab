"""Synthetic clip generator: determinism, exact ground truth, figure drawn from its keypoints."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from movingbg.synth import OPENPOSE18_NAMES, gt_background_tracks, gt_tracks, make_clip


def test_shapes_dtypes_and_determinism():
    a = make_clip(seed=3, num_frames=6, width=96, height=64)
    b = make_clip(seed=3, num_frames=6, width=96, height=64)
    assert a.frames.shape == (6, 64, 96, 3) and a.frames.dtype == np.uint8
    assert a.background.shape == (6, 64, 96, 3) and a.background.dtype == np.uint8
    assert a.alpha.shape == (6, 64, 96) and a.alpha.dtype == np.float32
    assert a.bg_transforms.shape == (6, 2, 3) and a.bg_transforms.dtype == np.float64
    assert a.keypoints.shape == (6, 18, 3) and len(OPENPOSE18_NAMES) == 18
    assert (a.num_frames, a.height, a.width) == (6, 64, 96)
    assert 0.0 <= a.alpha.min() and a.alpha.max() <= 1.0 and a.alpha.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(a.bg_transforms[0], [[1, 0, 0], [0, 1, 0]])
    for name in ("frames", "alpha", "bg_transforms", "keypoints", "background"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = make_clip(seed=4, num_frames=6, width=96, height=64)
    assert not np.array_equal(a.frames, c.frames)


def test_background_follows_transform_exactly():
    clip = make_clip(
        seed=1, num_frames=12, width=128, height=96, pan=(1.5, -0.7), zoom=0.02, rotation_deg=0.5, figure=False
    )
    np.testing.assert_array_equal(clip.frames, clip.background)
    assert not clip.alpha.any()
    src = clip.frames[0].astype(np.float32)
    for t in (1, 6, 11):
        warped = cv2.warpAffine(src, clip.bg_transforms[t], (128, 96), flags=cv2.INTER_LINEAR)
        inner = (slice(20, -20), slice(20, -20))
        err = np.abs(warped - clip.frames[t])[inner].mean()
        # frame t is the texture resampled once, frame 0 warped is resampled twice: blur only
        assert err < 3.0, err
        off = clip.bg_transforms[t].copy()
        off[0, 2] += 0.5
        wrong = cv2.warpAffine(src, off, (128, 96), flags=cv2.INTER_LINEAR)
        assert np.abs(wrong - clip.frames[t])[inner].mean() > 2 * err


def test_camera_parameters_mean_what_they_say():
    clip = make_clip(seed=0, num_frames=5, width=64, height=48, pan=(2.0, 1.0), zoom=0.1, rotation_deg=0.0)
    c = np.array([31.5, 23.5])
    traj = gt_background_tracks(clip, np.array([c, c + [10.0, 0.0]]))
    np.testing.assert_allclose(traj[4, 0], c + [8.0, 4.0], atol=1e-9)  # the centre only pans
    np.testing.assert_allclose(traj[4, 1] - traj[4, 0], [10.0 * 1.1**4, 0.0], atol=1e-9)  # zoom in


def test_gt_tracks_from_any_frame_agree():
    clip = make_clip(seed=2, num_frames=8, width=96, height=64, pan=(1.0, 0.5), zoom=-0.01, rotation_deg=1.0)
    p0 = np.array([[10.0, 12.0], [50.0, 40.0], [80.5, 7.25]])
    traj = gt_background_tracks(clip, p0)
    np.testing.assert_allclose(traj[0], p0, atol=1e-9)
    births = np.array([0, 3, 7])
    again = gt_background_tracks(clip, traj[births, np.arange(3)], from_frame=births)
    np.testing.assert_allclose(again, traj, atol=1e-9)
    tr = gt_tracks(clip, traj[births, np.arange(3)], from_frame=births)
    assert not tr.visible[:3, 1].any() and not tr.visible[:7, 2].any()
    with pytest.raises(ValueError, match="points"):
        gt_background_tracks(clip, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="from_frame"):
        gt_background_tracks(clip, p0, from_frame=8)


def test_gt_tracks_are_masked_by_the_figure():
    clip = make_clip(seed=0, num_frames=6, width=96, height=96)
    ys, xs = np.mgrid[2:94:3, 2:94:3]
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    tr = gt_tracks(clip, pts)
    xi = np.clip(np.rint(tr.points[..., 0]), 0, 95).astype(int)
    yi = np.clip(np.rint(tr.points[..., 1]), 0, 95).astype(int)
    on_person = clip.alpha[np.arange(6)[:, None], yi, xi] >= 0.5
    assert on_person.any()
    assert not (tr.visible & on_person).any()


def test_figure_is_drawn_from_keypoints():
    clip = make_clip(seed=5, num_frames=10, width=128, height=128)
    kp = clip.keypoints
    idx = {n: i for i, n in enumerate(OPENPOSE18_NAMES)}
    assert (kp[..., 2] == 1.0).all()  # the whole figure stays in the frame
    limbs = [
        ("neck", "r_shoulder"),
        ("r_shoulder", "r_elbow"),
        ("r_elbow", "r_wrist"),
        ("l_shoulder", "l_elbow"),
        ("l_elbow", "l_wrist"),
        ("r_hip", "r_knee"),
        ("r_knee", "r_ankle"),
        ("l_hip", "l_knee"),
        ("l_knee", "l_ankle"),
    ]
    for t in range(10):
        for a, b in limbs:
            for w in (0.0, 0.5, 1.0):  # both joints and the middle of every limb are on the figure
                x, y = (1 - w) * kp[t, idx[a], :2] + w * kp[t, idx[b], :2]
                assert clip.alpha[t, int(round(y)), int(round(x))] >= 0.5, (t, a, b, w)
        assert clip.alpha[t, int(round(kp[t, idx["nose"], 1])), int(round(kp[t, idx["nose"], 0]))] >= 0.5
    # the person's right side is on the image left (the figure faces the camera)
    assert (kp[:, idx["r_shoulder"], 0] < kp[:, idx["l_shoulder"], 0]).all()
    # it moves: translates and swings its limbs
    assert np.abs(kp[-1, idx["neck"], 0] - kp[0, idx["neck"], 0]) > 10
    wrist_rel = kp[:, idx["r_wrist"], :2] - kp[:, idx["neck"], :2]
    assert np.ptp(wrist_rel[:, 0]) > 2 or np.ptp(wrist_rel[:, 1]) > 2
    # figure pixels differ from the background, elsewhere the frame is the background
    person = clip.alpha >= 0.99
    assert (clip.frames[clip.alpha == 0] == clip.background[clip.alpha == 0]).all()
    assert np.abs(clip.frames[person].astype(int) - clip.background[person]).mean() > 10


def test_no_figure():
    clip = make_clip(seed=0, num_frames=3, width=32, height=32, figure=False)
    assert not clip.alpha.any() and not clip.keypoints.any()


def test_single_frame():
    clip = make_clip(seed=0, num_frames=1, width=40, height=30)
    assert clip.frames.shape == (1, 30, 40, 3)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"num_frames": 0}, "num_frames"),
        ({"width": 4}, "width"),
        ({"pan": (1.0,)}, "pan"),
        ({"zoom": -1.0}, "zoom"),
        ({"rotation_deg": float("nan")}, "rotation_deg"),
        ({"figure_height": 0.0}, "figure_height"),
        ({"sway": 0.5}, "sway"),
        ({"sway": -0.1}, "sway"),
        ({"sway": 0.2, "sway_period": 1.0}, "sway_period"),
    ],
)
def test_invalid_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_clip(**kwargs)


def _neck_x(clip):
    return clip.keypoints[:, 1, 0]


def test_sway_speed_does_not_depend_on_the_clip_length():
    """sway > 0: the figure goes back and forth at a speed set in px/frame (the first frames of a short and
    a long clip coincide); sway = 0: one walk over the clip, so a longer clip moves slower per frame."""
    short = make_clip(seed=5, num_frames=8, width=64, height=64, sway=0.25, sway_period=20)
    long = make_clip(seed=5, num_frames=40, width=64, height=64, sway=0.25, sway_period=20)
    np.testing.assert_allclose(_neck_x(short), _neck_x(long)[:8])
    x = _neck_x(long)
    assert x.max() - x.min() > 0.4 * 64 and 0 <= x.min() and x.max() <= 63  # crosses half the frame, stays in it
    assert np.abs(np.diff(x[:21])).max() <= 0.25 * 64 * 2 * np.pi / 20 + 1e-3  # speed bound of the sine
    walk8 = _neck_x(make_clip(seed=5, num_frames=8, width=64, height=64))
    walk40 = _neck_x(make_clip(seed=5, num_frames=40, width=64, height=64))
    assert abs(walk8[-1] - walk8[0]) == pytest.approx(abs(walk40[-1] - walk40[0]), rel=1e-5)


def test_fast_enough():
    make_clip(seed=0, num_frames=2, width=64, height=64)  # warm-up (imports, OpenCV init)
    t0 = time.perf_counter()
    make_clip(seed=1, num_frames=16, width=256, height=256)
    per_frame = (time.perf_counter() - t0) / 16
    assert per_frame < 0.1, per_frame
