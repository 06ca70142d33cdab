"""Background point tracks: seeding, KLT accuracy against exact ground truth, glue, rendering."""

from __future__ import annotations

import numpy as np
import pytest

from movingbg.preprocess.track_render import default_radius, render_tracks, track_colors
from movingbg.preprocess.tracks import (
    make_queries,
    sample_background_points,
    select_tracks,
    track_klt,
    track_points_to_tracks,
)
from movingbg.synth import gt_background_tracks, make_clip
from movingbg.types import Tracks

NUM_POINTS = 50


@pytest.fixture(scope="module")
def clip():
    # known pan + 1 %/frame zoom, and a moving figure in front
    return make_clip(seed=0, num_frames=24, width=160, height=128, pan=(1.5, 0.7), zoom=0.01)


@pytest.fixture(scope="module")
def klt(clip):
    return track_klt(clip.frames, clip.alpha, num_points=NUM_POINTS)


def _on_person(tracks: Tracks, alpha: np.ndarray) -> np.ndarray:
    xi = np.clip(np.rint(tracks.points[..., 0]), 0, tracks.width - 1).astype(int)
    yi = np.clip(np.rint(tracks.points[..., 1]), 0, tracks.height - 1).astype(int)
    return alpha[np.arange(tracks.num_frames)[:, None], yi, xi] >= 0.5


def _errors(clip, tracks: Tracks) -> np.ndarray:
    """Per visible entry: distance to the exact trajectory of the track's birth position."""
    birth = np.argmax(tracks.visible, axis=0)
    start = tracks.points[birth, np.arange(tracks.num_tracks)]
    gt = gt_background_tracks(clip, start, from_frame=birth)
    return np.linalg.norm(gt - tracks.points, axis=-1)[tracks.visible]


# ------------------------------------------------------------------------------------ KLT


def test_klt_matches_ground_truth(clip, klt):
    assert klt.num_frames == 24 and (klt.width, klt.height) == (160, 128)
    err = _errors(clip, klt)
    assert err.size > 24 * NUM_POINTS * 0.6
    assert err.mean() < 0.5, err.mean()
    assert np.percentile(err, 95) < 1.0, np.percentile(err, 95)


def test_klt_no_visible_point_on_person(clip, klt):
    assert not (klt.visible & _on_person(klt, clip.alpha)).any()
    assert klt.visible[klt.visible].size and klt.in_frame()[klt.visible].all()


def test_klt_reseeding_keeps_visible_count(clip, klt):
    counts = klt.visible.sum(axis=1)
    assert counts.min() >= 0.6 * NUM_POINTS, counts
    assert klt.num_tracks > NUM_POINTS  # the pan and the figure cost tracks that were replaced


def test_klt_track_lifecycle(klt):
    vis = klt.visible
    birth = np.argmax(vis, axis=0)
    assert vis.any(axis=0).all()
    for i in range(klt.num_tracks):
        on = np.nonzero(vis[:, i])[0]
        # born once, visible without gaps, then lost for good
        assert on[0] == birth[i] and np.array_equal(on, np.arange(on[0], on[-1] + 1))
        # before birth: the birth position; after loss: the last position held
        np.testing.assert_array_equal(klt.points[: birth[i], i], np.repeat(klt.points[birth[i], i][None], birth[i], 0))
        np.testing.assert_array_equal(klt.points[on[-1] :, i], np.repeat(klt.points[on[-1], i][None], 24 - on[-1], 0))


def test_klt_deterministic(clip, klt):
    again = track_klt(clip.frames, clip.alpha, num_points=NUM_POINTS)
    np.testing.assert_array_equal(again.points, klt.points)
    np.testing.assert_array_equal(again.visible, klt.visible)


def test_klt_without_reseed_never_grows(clip):
    tr = track_klt(clip.frames[:8], clip.alpha[:8], num_points=NUM_POINTS, reseed=False)
    assert tr.num_tracks <= NUM_POINTS
    assert (np.diff(tr.visible.sum(axis=1)) <= 0).all()


def test_klt_static_camera_without_person_is_exact():
    clip = make_clip(seed=1, num_frames=5, width=96, height=80, pan=(0.0, 0.0), zoom=0.0)
    tr = track_klt(clip.background, None, num_points=20)
    assert tr.num_tracks == 20 and tr.visible.all()
    assert np.abs(tr.points - tr.points[:1]).max() < 0.05


def test_klt_all_person_gives_empty_tracks():
    frames = np.full((4, 32, 40, 3), 128, dtype=np.uint8)
    tr = track_klt(frames, np.ones((4, 32, 40), dtype=np.float32))
    assert tr.points.shape == (4, 0, 2) and tr.visible.shape == (4, 0)


def test_klt_single_frame(clip):
    tr = track_klt(clip.frames[:1], clip.alpha[:1], num_points=10)
    assert tr.num_frames == 1 and tr.num_tracks == 10 and tr.visible.all()
    assert not _on_person(tr, clip.alpha[:1]).any()


def test_klt_progress_and_interrupt(clip):
    calls = []
    track_klt(clip.frames[:5], None, num_points=5, on_frame=lambda d, n: calls.append((d, n)))
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    with pytest.raises(InterruptedError):
        track_klt(clip.frames[:5], None, num_points=5, check_interrupt=lambda: True)

    def boom():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        track_klt(clip.frames[:5], None, num_points=5, check_interrupt=boom)


def test_klt_argument_errors(clip):
    with pytest.raises(ValueError, match="alpha"):
        track_klt(clip.frames, clip.alpha[:, :-1])
    with pytest.raises(ValueError, match="alpha"):
        track_klt(clip.frames, clip.alpha[:5])
    with pytest.raises(ValueError, match="frames"):
        track_klt(clip.frames.astype(np.float32) / 255.0)
    with pytest.raises(ValueError, match="num_points"):
        track_klt(clip.frames, num_points=0)
    with pytest.raises(ValueError, match="win_size"):
        track_klt(clip.frames, win_size=20)
    with pytest.raises(ValueError, match="fb_threshold"):
        track_klt(clip.frames, fb_threshold=0)


# ------------------------------------------------------------------------------------ seeding


def test_sample_background_points_spacing_and_mask():
    alpha = np.zeros((96, 128), dtype=np.float32)
    alpha[20:70, 40:90] = 1.0
    pts = sample_background_points(alpha, 40, 10, border=4, rng=3)
    assert pts.shape == (40, 2) and pts.dtype == np.float32
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(40) * 1e9
    assert d.min() >= 10
    xi, yi = pts[:, 0].astype(int), pts[:, 1].astype(int)
    assert (alpha[yi, xi] < 0.5).all()
    assert not ((xi >= 40 - 3) & (xi < 90 + 3) & (yi >= 20 - 3) & (yi < 70 + 3)).any()  # eroded margin
    assert (xi >= 4).all() and (xi < 124).all() and (yi >= 4).all() and (yi < 92).all()
    np.testing.assert_array_equal(pts, sample_background_points(alpha, 40, 10, border=4, rng=3))


def test_sample_background_points_corners_existing_and_limits():
    clip = make_clip(seed=2, num_frames=1, width=128, height=96, figure=False)
    pts = sample_background_points(None, 25, 8, image=clip.frames[0])
    assert len(pts) == 25
    more = sample_background_points(None, 25, 8, image=clip.frames[0], existing=pts)
    d = np.linalg.norm(more[:, None] - pts[None], axis=-1)
    assert d.min() >= 8 - 1.0
    # a tiny background holds only a few points at that spacing; all person -> empty
    alpha = np.ones((64, 64), dtype=np.float32)
    alpha[:, :12] = 0.0
    few = sample_background_points(alpha, 50, 10, margin=0, border=0)
    assert 0 < len(few) < 50
    assert sample_background_points(np.ones((64, 64)), 10, 5).shape == (0, 2)
    assert sample_background_points(np.zeros((64, 64)), 0, 5).shape == (0, 2)
    with pytest.raises(ValueError, match="alpha0"):
        sample_background_points(np.zeros((2, 8, 8)), 5, 2)
    with pytest.raises(ValueError, match="min_distance"):
        sample_background_points(np.zeros((8, 8)), 5, -1)
    with pytest.raises(ValueError, match="image"):
        sample_background_points(np.zeros((8, 8)), 5, 1, image=np.zeros((9, 8, 3), np.uint8))


def test_make_queries(clip):
    q = make_queries(clip.alpha, 20, 8)
    assert q.shape == (20, 3) and (q[:, 0] == 0).all()
    xi, yi = q[:, 1].astype(int), q[:, 2].astype(int)
    assert (clip.alpha[0, yi, xi] < 0.5).all()
    q = make_queries(clip.alpha, 10, 8, every=10, frames=clip.frames)
    assert sorted(set(q[:, 0].tolist())) == [0.0, 10.0, 20.0] and len(q) == 30
    t = q[:, 0].astype(int)
    assert (clip.alpha[t, q[:, 2].astype(int), q[:, 1].astype(int)] < 0.5).all()
    assert make_queries(np.ones((3, 16, 16)), 5, 2).shape == (0, 3)
    with pytest.raises(ValueError, match="alpha"):
        make_queries(np.zeros((16, 16)), 5, 2)
    with pytest.raises(ValueError, match="every"):
        make_queries(clip.alpha, 5, 2, every=0)


def test_backend_glue_masks_and_squeezes(clip):
    T, N = 24, 6
    pts = np.zeros((1, T, N, 2), dtype=np.float32)
    pts[..., 0] = np.linspace(-5, 170, N)[None, None, :]
    pts[..., 1] = 64.0
    vis = np.ones((1, T, N), dtype=np.float32)
    tr = track_points_to_tracks(pts, vis, 160, 128, alpha=clip.alpha)
    assert tr.points.shape == (T, N, 2)
    assert not tr.visible[:, 0].any() and not tr.visible[:, -1].any()  # outside the frame
    assert not (tr.visible & _on_person(tr, clip.alpha)).any()
    q = np.stack([np.arange(N) * 3.0, pts[0, 0, :, 0], pts[0, 0, :, 1]], axis=1)
    tr2 = track_points_to_tracks(pts[0], vis[0] > 0, 160, 128, queries=q, hide_before_query=True)
    for i in range(N):
        assert not tr2.visible[: 3 * i, i].any()
    with pytest.raises(ValueError, match="visible"):
        track_points_to_tracks(pts[0], vis[0, :, :3], 160, 128)
    with pytest.raises(ValueError, match="alpha"):
        track_points_to_tracks(pts[0], vis[0], 160, 128, alpha=clip.alpha[:3])
    with pytest.raises(ValueError, match="queries"):
        track_points_to_tracks(pts[0], vis[0], 160, 128, hide_before_query=True)


def test_select_tracks(klt):
    sub = select_tracks(klt, 10, rng=0)
    assert sub.num_tracks == 10 and sub.visible.any(axis=0).all()
    again = select_tracks(klt, 10, rng=0)
    np.testing.assert_array_equal(sub.points, again.points)
    assert select_tracks(klt, 10_000).num_tracks == klt.num_tracks
    for seed in range(5):
        assert 5 <= select_tracks(klt, (5, 50), rng=seed).num_tracks <= 50
    with pytest.raises(ValueError, match="num"):
        select_tracks(klt, -1)
    with pytest.raises(ValueError, match="num"):
        select_tracks(klt, (9, 3))


# ------------------------------------------------------------------------------------ rendering


def _tiny_tracks() -> Tracks:
    pts = np.array(
        [
            [[10.0, 10.0], [40.0, 20.0], [20.0, 40.0]],
            [[12.0, 11.0], [38.0, 22.0], [22.0, 38.0]],
            [[14.0, 12.0], [36.0, 24.0], [24.0, 36.0]],
        ],
        dtype=np.float32,
    )
    vis = np.array([[True, True, False], [True, False, True], [True, True, True]])
    return Tracks(pts, vis, 64, 48)


def test_render_colours_fixed_and_invisible_not_drawn():
    tr = _tiny_tracks()
    img = render_tracks(tr, radius=3)
    assert img.shape == (3, 48, 64, 3) and img.dtype == np.uint8
    colors = track_colors(3)
    for t in range(3):
        for i in range(3):
            x, y = np.rint(tr.points[t, i]).astype(int)
            if tr.visible[t, i]:
                np.testing.assert_array_equal(img[t, y, x], colors[i])
            else:
                np.testing.assert_array_equal(img[t, y, x], [0, 0, 0])
    # nothing but the discs: every lit pixel has one of the track colours
    lit = img.reshape(-1, 3)[img.reshape(-1, 3).any(axis=1)]
    assert (lit[:, None, :] == colors[None]).all(axis=2).any(axis=1).all()


def test_render_disc_size_trail_and_background():
    tr = _tiny_tracks()
    for r in (1, 3, 6):
        img = render_tracks(tr.subset(np.array([0])), radius=r)
        area = img[0].any(axis=2).sum()
        assert 0.5 * np.pi * r * r <= area <= 2.0 * np.pi * (r + 1) ** 2, (r, area)
    assert default_radius(512, 512) == 4 and default_radius(96, 128) == 2
    plain = render_tracks(tr, radius=2)
    trailed = render_tracks(tr, radius=2, trail=2)
    assert trailed[2].any(axis=2).sum() > plain[2].any(axis=2).sum()
    np.testing.assert_array_equal(trailed[0], plain[0])  # no history at frame 0
    frames = np.full((3, 48, 64, 3), 77, dtype=np.uint8)
    over = render_tracks(tr, radius=2, background=frames)
    assert (frames == 77).all() and (over == 77).any() and (over != 77).any()
    assert render_tracks(Tracks(np.zeros((2, 0, 2)), np.zeros((2, 0), bool), 8, 8)).shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match="background"):
        render_tracks(tr, background=frames[:2])
    with pytest.raises(ValueError, match="radius"):
        render_tracks(tr, radius=0)
    with pytest.raises(ValueError, match="trail"):
        render_tracks(tr, trail=-1)


def test_track_colors_bright_distinct_stable():
    c = track_colors(64)
    assert c.shape == (64, 3) and c.dtype == np.uint8
    assert (c.max(axis=1) >= 220).all()
    assert len({tuple(x) for x in c}) == 64
    np.testing.assert_array_equal(track_colors(5), c[:5])
    assert track_colors(0).shape == (0, 3)
