"""Synthetic camera moves: sign conventions, easing, seeding, masking, argument errors."""

from __future__ import annotations

import numpy as np
import pytest

from movingbg.preprocess.camera import CAMERA_MOVES, EASINGS, camera_tracks, camera_transforms, ease
from movingbg.preprocess.track_render import render_tracks

T, W, H = 17, 160, 120
CENTRE = np.array([(W - 1) / 2.0, (H - 1) / 2.0])


def _apply(A: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ A[:, :2].T + A[:, 2]


def test_static_locks_the_camera():
    tr = camera_tracks(T, W, H, "static", 0.5, "ease_in_out", num_points=30)
    assert tr.points.shape[0] == T and tr.num_tracks >= 25
    assert (tr.points == tr.points[:1]).all()
    assert tr.visible.all()
    # strength 0 is static too, for any move
    for move in CAMERA_MOVES:
        A = camera_transforms(T, W, H, move, 0.0)
        np.testing.assert_allclose(A, np.broadcast_to([[1, 0, 0], [0, 1, 0]], A.shape), atol=1e-12)


@pytest.mark.parametrize(
    "move,expected",
    [
        ("pan_right", [-0.25 * W, 0.0]),  # camera turns right -> the scene slides left
        ("pan_left", [0.25 * W, 0.0]),
        ("tilt_up", [0.0, 0.25 * H]),  # camera tilts up -> the scene slides down
        ("tilt_down", [0.0, -0.25 * H]),
    ],
)
def test_pan_and_tilt_signs(move, expected):
    A = camera_transforms(T, W, H, move, 0.25, "linear")
    p = np.array([[30.0, 40.0], [100.0, 90.0]])
    np.testing.assert_allclose(_apply(A[-1], p) - p, [expected, expected], atol=1e-9)
    np.testing.assert_allclose(_apply(A[T // 2], p) - p, 0.5 * np.array([expected, expected]), atol=1e-9)
    tr = camera_tracks(T, W, H, move, 0.25, num_points=40)
    moved = tr.points[-1] - tr.points[0]
    np.testing.assert_allclose(moved, np.broadcast_to(expected, moved.shape), atol=1e-3)


def test_zoom_directions():
    p = np.array([[10.0, 10.0], [150.0, 20.0], [40.0, 110.0]])
    A_in = camera_transforms(T, W, H, "zoom_in", 0.5)
    A_out = camera_transforms(T, W, H, "zoom_out", 0.5)
    r0 = np.linalg.norm(p - CENTRE, axis=1)
    r_in = np.linalg.norm(_apply(A_in[-1], p) - CENTRE, axis=1)
    r_out = np.linalg.norm(_apply(A_out[-1], p) - CENTRE, axis=1)
    np.testing.assert_allclose(r_in, 1.5 * r0)
    np.testing.assert_allclose(r_out, r0 / 1.5)
    np.testing.assert_allclose(_apply(A_in[-1], CENTRE[None]), CENTRE[None], atol=1e-9)  # centre stays
    tr = camera_tracks(T, W, H, "zoom_in", 0.5, num_points=40)
    d = np.linalg.norm(tr.points - CENTRE, axis=-1)
    assert (np.diff(d, axis=0) >= -1e-4).all() and (d[-1] > d[0] + 1e-3).all()  # outwards, monotonic
    assert tr.visible[-1].sum() < tr.visible[0].sum()  # points leave the frame and are hidden
    assert (tr.visible == tr.in_frame()).all()


def test_orbit_has_parallax():
    A = camera_transforms(T, W, H, "orbit_right", 0.2)
    top, bottom = np.array([[80.0, 0.0]]), np.array([[80.0, H - 1.0]])
    d_top = _apply(A[-1], top) - top
    d_bottom = _apply(A[-1], bottom) - bottom
    np.testing.assert_allclose(d_top, [[0.2 * W, 0.0]], atol=1e-9)
    np.testing.assert_allclose(d_bottom, [[0.1 * W, 0.0]], atol=1e-9)
    A_left = camera_transforms(T, W, H, "orbit_left", 0.2)
    np.testing.assert_allclose(_apply(A_left[-1], top) - top, -d_top, atol=1e-9)


def test_easing_curves_and_endpoints():
    u = np.linspace(0.0, 1.0, 11)
    for name in EASINGS:
        e = ease(u, name)
        assert e[0] == 0.0 and e[-1] == 1.0 and (np.diff(e) >= 0).all()
    assert ease(0.5, "ease_in") < ease(0.5, "linear") < ease(0.5, "ease_out")
    assert ease(0.5, "ease_in_out") == pytest.approx(0.5)
    ends = [camera_transforms(T, W, H, "pan_right", 0.3, name) for name in EASINGS]
    for A in ends[1:]:
        np.testing.assert_allclose(A[-1], ends[0][-1])
        np.testing.assert_allclose(A[0], ends[0][0])
    mids = [A[T // 2, 0, 2] for A in ends]  # linear, ease_in, ease_out, ease_in_out
    assert mids[2] < mids[0] < mids[1]  # negative: ease_out has moved furthest left at mid-clip
    with pytest.raises(ValueError, match="easing"):
        camera_transforms(T, W, H, "pan_right", 0.3, "bouncy")


def test_handheld_seeded_bounded_smooth():
    a = camera_transforms(48, W, H, "handheld", 0.02, seed=7)
    b = camera_transforms(48, W, H, "handheld", 0.02, seed=7)
    c = camera_transforms(48, W, H, "handheld", 0.02, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_allclose(a[0], [[1, 0, 0], [0, 1, 0]])
    disp = _apply_all(a, CENTRE[None])[:, 0] - CENTRE  # rotation is about the centre
    assert np.abs(disp[:, 0]).max() <= 0.02 * W + 1e-9 and np.abs(disp[:, 1]).max() <= 0.02 * H + 1e-9
    assert np.abs(disp).max() > 0.01 * H  # it does shake
    roll = np.degrees(np.arctan2(a[:, 1, 0], a[:, 0, 0]))
    assert np.abs(roll).max() <= 0.2 + 1e-9
    step = np.abs(np.diff(disp, axis=0)).max()
    assert step < 0.5 * np.abs(disp).max()  # smooth, not white noise
    ta = camera_tracks(48, W, H, "handheld", 0.02, seed=7)
    tb = camera_tracks(48, W, H, "handheld", 0.02, seed=7)
    np.testing.assert_array_equal(ta.points, tb.points)
    np.testing.assert_array_equal(ta.visible, tb.visible)


def _apply_all(A: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.einsum("tij,nj->tni", A[:, :, :2], pts) + A[:, None, :, 2]


def test_points_seeded_apart_and_revealed_areas_filled():
    tr = camera_tracks(T, W, H, "pan_right", 0.5, num_points=40, min_distance=12, seed=3)
    p0 = tr.points[0]
    d = np.linalg.norm(p0[:, None] - p0[None], axis=-1) + np.eye(len(p0)) * 1e9
    assert d.min() >= 12
    counts = tr.visible.sum(axis=1)
    assert counts.min() >= 0.75 * 40 and counts.max() <= 1.35 * 40, counts
    late = ~tr.visible[0] & tr.visible[-1]
    assert late.any()  # tracks entering from the right as the camera pans
    plain = camera_tracks(T, W, H, "pan_right", 0.5, num_points=40, min_distance=12, seed=3, fill_revealed=False)
    assert plain.visible[-1].sum() < 0.7 * plain.visible[0].sum()


def test_masking_with_alpha():
    alpha = np.zeros((T, H, W), dtype=np.float32)
    for t in range(T):  # a "person" walking right
        alpha[t, 20:110, 30 + 3 * t : 70 + 3 * t] = 1.0
    tr = camera_tracks(T, W, H, "pan_left", 0.2, alpha=alpha, num_points=40)
    xi = np.clip(np.rint(tr.points[..., 0]), 0, W - 1).astype(int)
    yi = np.clip(np.rint(tr.points[..., 1]), 0, H - 1).astype(int)
    on = alpha[np.arange(T)[:, None], yi, xi] >= 0.5
    assert on.any() and not (on & tr.visible).any()
    # seeds avoid the person in frame 0
    assert not on[0].any()
    # a single (H, W) matte is used for every frame
    tr2 = camera_tracks(T, W, H, "static", 0.0, alpha=alpha[0], num_points=40)
    assert tr2.visible.all() and tr2.num_tracks >= 30
    # everything is person -> no tracks, no crash
    empty = camera_tracks(T, W, H, "pan_left", 0.2, alpha=np.ones((H, W), np.float32))
    assert empty.points.shape == (T, 0, 2)


def test_single_frame_and_render():
    tr = camera_tracks(1, W, H, "zoom_in", 0.5, num_points=20)
    assert tr.num_frames == 1 and tr.visible.all()
    img = render_tracks(camera_tracks(5, W, H, "orbit_left", 0.1, num_points=20), trail=2)
    assert img.shape == (5, H, W, 3) and img.any()


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"move": "dolly_zoom"}, "move"),
        ({"strength": -0.1}, "strength"),
        ({"strength": float("nan")}, "strength"),
        ({"strength": float("inf")}, "strength"),
        ({"strength": "fast"}, "strength"),
        ({"easing": "cubic"}, "easing"),
        ({"num_frames": 0}, "num_frames"),
        ({"width": 1}, "width"),
        ({"alpha": np.zeros((T, H, W + 1))}, "alpha"),
        ({"num_points": -3}, "num_points"),
    ],
)
def test_invalid_arguments(kwargs, name):
    args = {"num_frames": T, "width": W, "height": H, "move": "pan_left", "strength": 0.2, "easing": "linear"}
    args.update(kwargs)
    extra = {k: args.pop(k) for k in ("alpha", "num_points") if k in args}
    with pytest.raises(ValueError, match=name):
        camera_tracks(
            args["num_frames"], args["width"], args["height"], args["move"], args["strength"], args["easing"], **extra
        )
