"""PersonPose / FramePose payloads, COCO-WholeBody remap and the POSE_KEYPOINT interop."""

import json

import numpy as np
import pytest

from movingbg.preprocess.pose_format import (
    COCO_TO_OPENPOSE18,
    FramePose,
    PersonPose,
    from_pose_keypoint,
    from_wholebody,
    to_pose_keypoint,
)


def _wholebody(p=1):
    """(P, 133, 2) keypoints with point i at (i + 0.25, 1000 + i + 0.5) (+ 2000 per person)."""
    idx = np.arange(133, dtype=np.float32)
    one = np.stack([idx + 0.25, 1000 + idx + 0.5], axis=1)
    return np.stack([one + 2000 * k for k in range(p)]), np.full((p, 133), 0.9, np.float32)


def _person(seed=0, hands=True, face=True, feet=False, w=640, h=480):
    rng = np.random.default_rng(seed)

    def pts(n):
        a = np.zeros((n, 3), np.float32)
        a[:, 0] = rng.uniform(5, w - 5, n)
        a[:, 1] = rng.uniform(5, h - 5, n)
        a[:, 2] = 1.0
        return a

    body = pts(18)
    body[10] = 0  # a missing point
    return PersonPose(body=body, face=pts(68) if face else None, left_hand=pts(21) if hands else None,
                      right_hand=pts(21) if hands else None, feet=pts(6) if feet else None)


# ------------------------------------------------------------------ payloads

def test_person_pose_validates_and_freezes():
    body = np.zeros((18, 3))
    body[0] = (1, 2, 0.5)
    body[1] = (np.nan, 3, 0.9)  # non-finite -> missing
    body[2] = (7, 8, -1)  # negative conf -> missing
    p = PersonPose(body=body)
    assert p.body.dtype == np.float32 and not p.body.flags.writeable
    np.testing.assert_array_equal(p.body[1], 0)
    np.testing.assert_array_equal(p.body[2], 0)
    assert p.score == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"\(18, 3\)"):
        PersonPose(body=np.zeros((17, 3)))
    with pytest.raises(ValueError, match="left_hand"):
        PersonPose(body=body, left_hand=np.zeros((20, 3)))
    with pytest.raises(Exception):
        p.body = body  # frozen
    assert body[1, 0] != 0 or np.isnan(body[1, 0])  # input not modified


def test_frame_pose_validates():
    f = FramePose(64.0, 32, [PersonPose.empty()])
    assert (f.width, f.height) == (64, 32) and isinstance(f.people, tuple)
    with pytest.raises(ValueError):
        FramePose(0, 10)
    with pytest.raises(ValueError):
        FramePose(10, 10, ("not a person",))


# ------------------------------------------------------------------ COCO-WholeBody -> OpenPose-18

def test_from_wholebody_remap():
    kp, sc = _wholebody()
    f = from_wholebody(kp, sc, 640, 480, score_threshold=0.3)
    assert (f.width, f.height) == (640, 480) and len(f.people) == 1
    p = f.people[0]
    for op, coco in enumerate(COCO_TO_OPENPOSE18):
        if coco is None:
            continue
        np.testing.assert_allclose(p.body[op], [coco + 0.25, 1000 + coco + 0.5, 0.9], rtol=1e-6)
    # explicit spot checks of the mapping
    np.testing.assert_allclose(p.body[2, :2], kp[0, 6])    # right shoulder <- COCO 6
    np.testing.assert_allclose(p.body[7, :2], kp[0, 9])    # left wrist <- COCO 9
    np.testing.assert_allclose(p.body[14, :2], kp[0, 2])   # right eye <- COCO 2
    np.testing.assert_allclose(p.body[17, :2], kp[0, 3])   # left ear <- COCO 3
    # neck = mean of the shoulders
    np.testing.assert_allclose(p.body[1], [5.75, 1006.0, 0.9], rtol=1e-6)
    np.testing.assert_allclose(p.feet[:, :2], kp[0, 17:23])
    np.testing.assert_allclose(p.face[:, :2], kp[0, 23:91])
    np.testing.assert_allclose(p.left_hand[:, :2], kp[0, 91:112])
    np.testing.assert_allclose(p.right_hand[:, :2], kp[0, 112:133])


def test_from_wholebody_threshold_and_missing_parts():
    kp, sc = _wholebody(2)
    sc[0, 6] = 0.2            # right shoulder below threshold -> missing, and so is the neck
    sc[0, 91:112] = 0.1       # whole left hand below -> None
    sc[0, 23:91] = 0.0
    sc[0, 30] = 0.5           # one face point survives
    f = from_wholebody(kp, sc, 100, 100, score_threshold=0.3)
    p = f.people[0]
    np.testing.assert_array_equal(p.body[2], 0)
    np.testing.assert_array_equal(p.body[1], 0)
    assert p.left_hand is None and p.right_hand is not None
    assert (p.face[:, 2] > 0).sum() == 1 and p.face[30 - 23, 2] == pytest.approx(0.5)
    # second person untouched, offset by 2000
    np.testing.assert_allclose(f.people[1].body[0, :2], kp[1, 0])
    # a lower threshold keeps them
    q = from_wholebody(kp, sc, 100, 100, score_threshold=0.05).people[0]
    assert q.left_hand is not None and q.body[2, 2] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="133"):
        from_wholebody(np.zeros((1, 17, 2)), np.zeros((1, 17)), 10, 10)


# ------------------------------------------------------------------ POSE_KEYPOINT

def test_to_pose_keypoint_layout_matches_controlnet_aux():
    p = _person()
    frames = [FramePose(640, 480, (p,)), FramePose(640, 480, ())]
    data = to_pose_keypoint(frames)
    json.dumps(data)  # JSON-serialisable
    assert isinstance(data, list) and len(data) == 2
    d = data[0]
    assert d["canvas_width"] == 640 and d["canvas_height"] == 480
    assert data[1]["people"] == []
    person = d["people"][0]
    assert set(person) == {"pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d",
                           "hand_right_keypoints_2d"}
    assert len(person["pose_keypoints_2d"]) == 54
    assert len(person["face_keypoints_2d"]) == 70 * 3
    assert len(person["hand_left_keypoints_2d"]) == 63 and len(person["hand_right_keypoints_2d"]) == 63
    body = np.array(person["pose_keypoints_2d"]).reshape(18, 3)
    np.testing.assert_allclose(body[0], [p.body[0, 0], p.body[0, 1], 1.0], rtol=1e-6)  # pixels, conf 1
    np.testing.assert_array_equal(body[10], [0, 0, 0])  # missing
    face = np.array(person["face_keypoints_2d"]).reshape(70, 3)
    np.testing.assert_allclose(face[68, :2], p.body[14, :2])  # right eye, as comfyui_controlnet_aux pads
    np.testing.assert_allclose(face[69, :2], p.body[15, :2])
    assert all(isinstance(v, float) for v in person["pose_keypoints_2d"])
    # parts that are None stay None
    none = to_pose_keypoint([FramePose(10, 10, (PersonPose.empty(),))])[0]["people"][0]
    assert none["face_keypoints_2d"] is None and none["hand_left_keypoints_2d"] is None
    assert none["pose_keypoints_2d"] == [0.0] * 54


@pytest.mark.parametrize("keep_scores", [False, True])
def test_pose_keypoint_round_trip(keep_scores):
    people = (_person(1, feet=True), _person(2, hands=False))
    body = people[0].body.copy()
    body[3, 2] = 0.55
    people = (people[0].replace(body=body), people[1])
    frames = [FramePose(640, 480, people), FramePose(640, 480, people[1:]), FramePose(640, 480, ())]
    data = json.loads(json.dumps(to_pose_keypoint(frames, keep_scores=keep_scores, include_feet=True)))
    back = from_pose_keypoint(data)
    assert len(back) == 3
    for f, g in zip(frames, back):
        assert (g.width, g.height) == (f.width, f.height) and len(g.people) == len(f.people)
        for p, q in zip(f.people, g.people):
            for name, arr in p.parts().items():
                got = getattr(q, name)
                if arr is None:
                    assert got is None, name
                    continue
                np.testing.assert_allclose(got[:, :2], arr[:, :2], atol=1e-4, err_msg=name)
                want_c = arr[:, 2] if keep_scores else (arr[:, 2] > 0).astype(np.float32)
                np.testing.assert_allclose(got[:, 2], want_c, atol=1e-6, err_msg=name)


def test_from_pose_keypoint_controlnet_aux_sample_pixels():
    # What comfyui_controlnet_aux's DWPose node emits for one person (pixels, conf 1/0, face 70).
    body = [0.0] * 54
    body[0:3] = [320.5, 100.25, 1.0]    # nose
    body[3:6] = [321.0, 160.0, 1.0]     # neck
    sample = [{"people": [{"pose_keypoints_2d": body, "face_keypoints_2d": None,
                           "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None}],
               "canvas_height": 768, "canvas_width": 512}]
    (f,) = from_pose_keypoint(sample)
    assert (f.width, f.height) == (512, 768)
    p = f.people[0]
    np.testing.assert_allclose(p.body[0], [320.5, 100.25, 1.0])
    np.testing.assert_allclose(p.body[1], [321.0, 160.0, 1.0])
    assert p.face is None and p.left_hand is None and p.feet is None
    assert (p.body[2:, 2] == 0).all()


def test_from_pose_keypoint_normalised_and_variants():
    # OpenPose-node style: coordinates normalised to 0..1; nested triples; 25-point body; 68 face.
    body25 = np.zeros((25, 3))
    body25[0] = (0.5, 0.25, 1)
    body25[8] = (0.5, 0.6, 1)      # mid-hip: dropped (no OpenPose-18 slot)
    body25[9] = (0.45, 0.6, 1)     # right hip -> index 8
    body25[19] = (0.4, 0.95, 1)    # left big toe -> feet[0]
    face = np.zeros((68, 3))
    face[5] = (0.5, 0.2, 0.8)
    data = {"people": [{"pose_keypoints_2d": body25.tolist(), "face_keypoints_2d": face.ravel().tolist()}],
            "canvas_width": 200, "canvas_height": 100}
    (f,) = from_pose_keypoint(json.dumps(data))
    p = f.people[0]
    np.testing.assert_allclose(p.body[0], [100, 25, 1])
    np.testing.assert_allclose(p.body[8], [90, 60, 1])
    np.testing.assert_allclose(p.feet[0], [80, 95, 1])
    np.testing.assert_allclose(p.face[5], [100, 20, 0.8])
    assert p.left_hand is None and p.right_hand is None
    # forcing pixels keeps values as they are
    (g,) = from_pose_keypoint(data, normalized=False)
    np.testing.assert_allclose(g.people[0].body[0], [0.5, 0.25, 1])
    # empty lists and missing 'people' are fine
    (h,) = from_pose_keypoint([{"canvas_width": 8, "canvas_height": 8, "people": [
        {"pose_keypoints_2d": [], "hand_left_keypoints_2d": [0.0] * 63}]}])
    assert h.people[0].left_hand is None and (h.people[0].body == 0).all()
    (e,) = from_pose_keypoint([{"canvas_width": 8, "canvas_height": 8}])
    assert e.people == ()


@pytest.mark.parametrize("bad, expect", [
    (42, "expected a list"),
    ([1], r"pose_keypoint\[0\]: expected a dict"),
    ([{"people": []}], r"pose_keypoint\[0\]: missing 'canvas_width'"),
    ([{"people": [], "canvas_width": 0, "canvas_height": 5}], r"canvas_width.*positive integer"),
    ([{"people": [], "canvas_width": 4.5, "canvas_height": 5}], r"canvas_width.*positive integer"),
    ([{"people": "x", "canvas_width": 4, "canvas_height": 5}], r"\['people'\]: expected a list"),
    ([{"people": [[1, 2]], "canvas_width": 4, "canvas_height": 5}], r"\['people'\]\[0\]: expected a dict"),
    ([{"people": [{"pose_keypoints_2d": [1.0] * 10}], "canvas_width": 4, "canvas_height": 5}],
     r"pose_keypoints_2d'\]: expected 18 points \(54 numbers\) or 25 points \(75 numbers\), got 10"),
    ([{"people": [{"hand_left_keypoints_2d": [1.0] * 60}], "canvas_width": 4, "canvas_height": 5}],
     r"hand_left_keypoints_2d'\]: expected 21 points \(63 numbers\)"),
    ([{"people": [{"pose_keypoints_2d": ["a"] * 54}], "canvas_width": 4, "canvas_height": 5}], "numbers only"),
    ([{"people": [{"pose_keypoints_2d": [float("nan")] * 54}], "canvas_width": 4, "canvas_height": 5}], "NaN"),
    ([{"people": [{"face_keypoints_2d": "abc"}], "canvas_width": 4, "canvas_height": 5}], "flat list"),
    ("{not json", "not valid JSON"),
])
def test_from_pose_keypoint_errors(bad, expect):
    with pytest.raises(ValueError, match="pose_keypoint") as info:
        from_pose_keypoint(bad)
    assert info.match(expect)
