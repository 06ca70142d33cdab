"""DWPose/OpenPose-style skeleton rendering, checked against hand-computed pixels."""

import numpy as np
import pytest

from movingbg.preprocess.pose_format import FramePose, PersonPose
from movingbg.preprocess.pose_render import (
    HAND_EDGES,
    OPENPOSE_COLORS,
    OPENPOSE_LIMBS,
    hand_edge_colors,
    hsv_to_rgb,
    render_pose,
    render_poses,
)


def _body(points):
    b = np.zeros((18, 3), np.float32)
    for j, (x, y) in points.items():
        b[j] = (x, y, 1.0)
    return b


def _px(img, x, y):
    return tuple(int(v) for v in img[y, x])


def test_openpose_tables():
    assert len(OPENPOSE_LIMBS) == 17 and len(OPENPOSE_COLORS) == 18 and len(HAND_EDGES) == 20
    assert OPENPOSE_LIMBS[0] == (1, 2) and OPENPOSE_LIMBS[12] == (1, 0)
    assert OPENPOSE_COLORS[0] == (255, 0, 0) and OPENPOSE_COLORS[17] == (255, 0, 85)


def test_hsv_matches_known_values():
    assert hsv_to_rgb(0.0) == (1.0, 0.0, 0.0)
    assert hsv_to_rgb(1 / 3) == pytest.approx((0.0, 1.0, 0.0))
    assert hsv_to_rgb(2 / 3) == pytest.approx((0.0, 0.0, 1.0))
    assert hsv_to_rgb(0.2) == pytest.approx((0.8, 1.0, 0.0))
    assert hsv_to_rgb(0.9) == pytest.approx((1.0, 0.0, 0.6))
    cols = hand_edge_colors()
    assert cols[0] == (255.0, 0.0, 0.0) and cols[4] == pytest.approx((204.0, 255.0, 0.0))


def test_body_joints_limbs_and_background():
    # neck (100, 100) -> right shoulder (160, 100): limb 0, colour red x 0.6
    frame = FramePose(256, 192, (PersonPose(body=_body({1: (100, 100), 2: (160, 100)})),))
    img = render_pose(frame)
    assert img.shape == (192, 256, 3) and img.dtype == np.uint8
    assert _px(img, 100, 100) == OPENPOSE_COLORS[1]           # neck joint, full colour
    assert _px(img, 160, 100) == OPENPOSE_COLORS[2]           # right shoulder joint
    assert _px(img, 103, 100) == OPENPOSE_COLORS[1]           # within radius 4
    assert _px(img, 130, 100) == (153, 0, 0)                  # limb midpoint: (255, 0, 0) * 0.6
    assert _px(img, 130, 103) == (153, 0, 0)                  # stick half-width 4
    assert _px(img, 130, 106) == (0, 0, 0)                    # outside the stick
    assert _px(img, 10, 10) == (0, 0, 0)
    lit = img.any(axis=2)
    assert lit[90:111, 90:171].sum() == lit.sum()             # nothing drawn elsewhere


def test_missing_and_thresholded_points_are_skipped():
    body = _body({1: (100, 100), 2: (160, 100), 5: (40, 100)})
    body[5, 2] = 0.2
    frame = FramePose(200, 200, (PersonPose(body=body),))
    img = render_pose(frame, threshold=0.3)
    assert _px(img, 40, 100) == (0, 0, 0) and _px(img, 70, 100) == (0, 0, 0)
    img = render_pose(frame)  # default threshold 0: a 0.2 point is drawn
    assert _px(img, 40, 100) == OPENPOSE_COLORS[5]
    assert _px(img, 70, 100) == tuple(int(c * 0.6) for c in OPENPOSE_COLORS[1])  # limb 1 (1, 5)
    empty = render_pose(FramePose(50, 40, (PersonPose.empty(),)))
    assert not empty.any()


def test_diagonal_limb_colour_and_orientation():
    # right hip (8) at (50, 50) -> right knee (9) at (110, 130): limb 7 uses colour 7
    frame = FramePose(200, 200, (PersonPose(body=_body({8: (50, 50), 9: (110, 130)})),))
    img = render_pose(frame)
    want = tuple(int(c * 0.6) for c in OPENPOSE_COLORS[7])
    assert _px(img, 80, 90) == want
    # perpendicular offset of 7 px from the bone axis is outside the stick
    n = np.array([80, -60]) / 100.0
    x, y = (np.array([80, 90]) + 7 * n).round().astype(int)
    assert _px(img, x, y) == (0, 0, 0)


def test_hands_and_face():
    hand = np.zeros((21, 3), np.float32)
    hand[0] = (200, 200, 1)
    hand[1] = (260, 200, 1)     # edge 0: hsv(0) = red
    hand[5] = (200, 120, 1)     # edge 4: hsv(0.2) = (204, 255, 0)
    face = np.zeros((68, 3), np.float32)
    face[10] = (300, 60, 1)
    frame = FramePose(400, 300, (PersonPose(body=np.zeros((18, 3)), left_hand=hand, face=face),))
    img = render_pose(frame)
    assert _px(img, 200, 200) == (0, 0, 255)        # hand joint dot
    assert _px(img, 260, 200) == (0, 0, 255)
    assert _px(img, 230, 200) == (255, 0, 0)        # edge 0 midpoint
    assert _px(img, 230, 201) == (255, 0, 0)        # thickness 2
    assert _px(img, 230, 204) == (0, 0, 0)
    assert _px(img, 200, 160) == (204, 255, 0)      # edge 4 midpoint
    assert _px(img, 300, 60) == (255, 255, 255)     # face dot, radius 3
    assert _px(img, 302, 60) == (255, 255, 255)
    assert _px(img, 304, 60) == (0, 0, 0)
    no_hands = render_pose(frame, draw_hands=False)
    assert _px(no_hands, 230, 200) == (0, 0, 0) and _px(no_hands, 300, 60) == (255, 255, 255)
    no_face = render_pose(frame, draw_face=False)
    assert _px(no_face, 300, 60) == (0, 0, 0) and _px(no_face, 230, 200) == (255, 0, 0)


def test_draw_order_hands_over_body():
    body = _body({3: (100, 50), 4: (100, 150)})  # right elbow -> wrist (limb 3)
    hand = np.zeros((21, 3), np.float32)
    hand[0] = (100, 100, 1)
    frame = FramePose(200, 200, (PersonPose(body=body, right_hand=hand),))
    img = render_pose(frame)
    assert _px(img, 100, 100) == (0, 0, 255)
    assert _px(render_pose(frame, draw_body=False), 100, 60) == (0, 0, 0)


def test_output_size_scaling_and_sequence():
    frame = FramePose(100, 50, (PersonPose(body=_body({0: (40, 20)})),))
    big = render_pose(frame, 200, 100)
    assert big.shape == (100, 200, 3)
    assert _px(big, 80, 40) == OPENPOSE_COLORS[0] and _px(big, 40, 20) == (0, 0, 0)
    seq = render_poses([frame, FramePose(100, 50, ())])
    assert seq.shape == (2, 50, 100, 3) and seq.dtype == np.uint8
    assert seq[0].any() and not seq[1].any()
    with pytest.raises(ValueError, match="different canvas sizes"):
        render_poses([frame, FramePose(60, 50, ())])
    assert render_poses([frame, FramePose(60, 50, ())], 100, 50).shape == (2, 50, 100, 3)
    with pytest.raises(ValueError):
        render_poses([])
