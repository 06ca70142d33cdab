"""Frame plans: progressive clips (every frame exactly once) and sliding windows (coverage, averaging)."""

from __future__ import annotations

import pytest
import torch

from movingbg.pipelines.planner import (MAX_CLIP_LENGTH, ClipPlan, average_windows, plan_progressive,
                                        plan_sliding_window, window_counts)


def _check_progressive(plan: list[ClipPlan], num_frames: int, clip_length: int) -> None:
    emitted = [f for clip in plan for f in clip.emit]
    assert emitted == list(range(num_frames)), (num_frames, clip_length)
    assert plan[0].cond == "reference" and plan[0].frames[0] == 0 and plan[0].emit == plan[0].frames
    for k, clip in enumerate(plan):
        assert clip.index == k
        assert 1 <= clip.length <= clip_length
        assert clip.frames == tuple(range(clip.start, clip.stop))
        assert set(clip.emit) <= set(clip.frames)
    for prev, nxt in zip(plan, plan[1:]):
        assert nxt.cond == "previous"
        assert nxt.frames[0] == prev.frames[-1]          # starts ON the previous clip's last frame
        assert nxt.emit == nxt.frames[1:]                  # ... which is not emitted twice
        assert nxt.emit_offset == 1 and nxt.length >= 2
    for clip in plan[1:-1]:
        assert clip.length == clip_length                  # only the last clip may be shorter


def test_progressive_every_frame_exactly_once():
    for clip_length in range(2, MAX_CLIP_LENGTH + 1):
        for num_frames in list(range(1, 70)) + [95, 96, 97, 192, 1000]:
            plan = plan_progressive(num_frames, clip_length)
            _check_progressive(plan, num_frames, clip_length)
            expected = 1 + -(-max(num_frames - clip_length, 0) // (clip_length - 1))
            assert len(plan) == expected


def test_progressive_examples():
    plan = plan_progressive(10, 4)
    assert [c.frames for c in plan] == [(0, 1, 2, 3), (3, 4, 5, 6), (6, 7, 8, 9)]
    assert [c.emit for c in plan] == [(0, 1, 2, 3), (4, 5, 6), (7, 8, 9)]
    plan = plan_progressive(8, 4)                          # last clip shorter: condition + 1 new frame
    assert [c.frames for c in plan] == [(0, 1, 2, 3), (3, 4, 5, 6), (6, 7)]
    assert [c.frames for c in plan_progressive(3, 24)] == [(0, 1, 2)]
    assert [c.frames for c in plan_progressive(1, 24)] == [(0,)]
    with pytest.raises(Exception):
        plan[0].cond = "previous"                          # frozen


@pytest.mark.parametrize("args, name", [
    ((0, 4), "num_frames"), ((-3, 4), "num_frames"), ((2.5, 4), "num_frames"),
    ((10, 1), "clip_length"), ((10, 33), "clip_length"), ((10, True), "clip_length"),
])
def test_progressive_bad_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        plan_progressive(*args)


def test_sliding_window_coverage():
    for window in (1, 2, 4, 8, 24, 32):
        for overlap in range(0, window):
            for num_frames in (1, 5, 23, 24, 25, 47, 96, 100):
                windows = plan_sliding_window(num_frames, window, overlap)
                covered = sorted({f for w in windows for f in w})
                assert covered == list(range(num_frames))
                assert all(len(w) == min(window, num_frames) for w in windows)
                assert all(w == list(range(w[0], w[0] + len(w))) for w in windows)
                for a, b in zip(windows, windows[1:]):
                    assert a[0] < b[0] and len(set(a) & set(b)) >= overlap
    assert plan_sliding_window(96, 24, 4) == [list(range(s, s + 24)) for s in (0, 20, 40, 60, 72)]
    assert plan_sliding_window(10, 24, 4) == [list(range(10))]


def test_window_counts_and_averaging_weights():
    windows = plan_sliding_window(10, 4, 2)                # starts 0, 2, 4, 6
    counts = window_counts(windows, 10)
    assert counts.tolist() == [1, 1, 2, 2, 2, 2, 2, 2, 1, 1]
    # each window holds its own constant: the average is the mean over the covering windows
    values = [torch.full((4, 3), float(i)) for i in range(len(windows))]
    avg = average_windows(windows, values, 10)
    assert avg.shape == (10, 3)
    assert avg[:, 0].tolist() == [0, 0, 0.5, 0.5, 1.5, 1.5, 2.5, 2.5, 3, 3]
    # identical values everywhere stay unchanged (weights sum to 1)
    same = [torch.ones(4, 2, 5, 5) * 7 for _ in windows]
    assert torch.allclose(average_windows(windows, same, 10), torch.full((10, 2, 5, 5), 7.0))


@pytest.mark.parametrize("args, name", [
    ((0, 4, 1), "num_frames"), ((10, 0, 0), "window"), ((10, 33, 1), "window"),
    ((10, 4, 4), "overlap"), ((10, 4, -1), "overlap"),
])
def test_sliding_window_bad_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        plan_sliding_window(*args)


def test_average_windows_bad_arguments():
    with pytest.raises(ValueError, match="uncovered"):
        window_counts([[0, 1]], 3)
    with pytest.raises(ValueError, match="outside"):
        window_counts([[0, 1, 2, 3]], 3)
    with pytest.raises(ValueError, match="one tensor per window"):
        average_windows([[0, 1]], [], 2)
    with pytest.raises(ValueError, match="must be"):
        average_windows([[0, 1]], [torch.zeros(3, 4)], 2)
