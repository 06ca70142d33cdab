"""DWPoseEstimator end to end through the real rtmlib + ONNX Runtime code path, with tiny ONNX models
whose outputs are fixed (tests/fixtures/dummy_onnx.py), so every keypoint position is known."""

import json
import sys

import numpy as np
import pytest

pytest.importorskip("rtmlib")
pytest.importorskip("onnx")

from movingbg.preprocess import pose as pose_mod  # noqa: E402
from movingbg.preprocess.pose import (  # noqa: E402
    DWPOSE_DETECTOR,
    DWPOSE_POSE,
    DWPoseEstimator,
    decode_yolox,
    nms,
)
from movingbg.preprocess.pose_format import COCO_TO_OPENPOSE18, from_pose_keypoint, to_pose_keypoint  # noqa: E402
from movingbg.preprocess.pose_render import render_pose  # noqa: E402
from movingbg.weights import WeightSpec  # noqa: E402
from tests.fixtures.dummy_onnx import make_detector_onnx, make_simcc_pose_onnx, wholebody_template  # noqa: E402

POSE_W, POSE_H = 288, 384
DET = 640


def expected_keypoints(kp_in, box):
    """Where rtmlib's RTMPose puts model-input keypoints ``kp_in`` for an image box ``x0, y0, x1, y1``.

    The box is padded by 1.25, grown to the 288:384 aspect ratio about its centre, and the
    288 x 384 crop maps linearly onto it.
    """
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w, h = (x1 - x0) * 1.25, (y1 - y0) * 1.25
    if w > h * POSE_W / POSE_H:
        h = w * POSE_H / POSE_W
    else:
        w = h * POSE_W / POSE_H
    return np.asarray(kp_in) / (POSE_W, POSE_H) * (w, h) + (cx - w / 2, cy - h / 2)


@pytest.fixture(scope="module")
def kp_in():
    return wholebody_template()


@pytest.fixture(scope="module")
def scores():
    s = np.full(133, 0.9, np.float32)
    s[3] = 0.2       # COCO left ear: below the default keypoint threshold
    s[4] = 0.0       # COCO right ear: the model reports it missing
    s[100:104] = 0.25
    return s


@pytest.fixture(scope="module")
def models(tmp_path_factory, kp_in, scores):
    d = tmp_path_factory.mktemp("dwpose")
    # image 360 x 512 (H x W): letterbox ratio min(640/360, 640/512) = 1.25
    boxes = [
        (100, 80, 300, 440, 0.6),          # person A (second)
        (340, 40, 600, 420, 0.9),          # person B (most confident)
        (20, 20, 90, 90, 0.95, 2),         # a car: not a person
        (500, 300, 560, 400, 0.2),         # person below det_threshold 0.3
        (345, 45, 600, 425, 0.7),          # duplicate of B: removed by NMS
    ]
    det = make_detector_onnx(d / "det.onnx", boxes)
    det_nms = make_detector_onnx(d / "det_nms.onnx", [(100, 80, 300, 440, 0.6)], layout="nms")
    empty = make_detector_onnx(d / "det_none.onnx", [(100, 80, 300, 440, 0.1)])
    pose = make_simcc_pose_onnx(d / "pose.onnx", kp_in, scores)
    return {"det": det, "det_nms": det_nms, "det_none": empty, "pose": pose, "dir": d}


@pytest.fixture(scope="module")
def estimator(models):
    return DWPoseEstimator(models["det"], models["pose"])


RATIO = 1.25
BOX_A = np.array([100, 80, 300, 440]) / RATIO
BOX_B = np.array([340, 40, 600, 420]) / RATIO


def _image(h=360, w=512):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_weight_specs():
    for spec, name in ((DWPOSE_DETECTOR, "yolox_l.onnx"), (DWPOSE_POSE, "dw-ll_ucoco_384.onnx")):
        assert isinstance(spec, WeightSpec) and spec.filename == name
        assert spec.urls[0] == f"https://huggingface.co/yzd-v/DWPose/resolve/main/{name}"
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0


def test_dummy_models_are_tiny(models):
    for key in ("det", "pose"):
        assert models[key] and (models["dir"] / f"{key}.onnx").stat().st_size < 16_000


def test_detection_decodes_boxes_in_image_pixels(estimator):
    boxes, scores = estimator.detect(_image())
    np.testing.assert_allclose(scores, [0.9, 0.6], rtol=1e-6)
    np.testing.assert_allclose(boxes, [BOX_B, BOX_A], atol=1e-3)


def test_keypoints_land_where_the_model_says(estimator, kp_in, scores):
    frame = estimator(_image(), max_people=0, keypoint_threshold=0.3)
    assert (frame.width, frame.height) == (512, 360)
    assert len(frame.people) == 2
    for person, box in zip(frame.people, (BOX_B, BOX_A)):   # most confident first
        want = expected_keypoints(kp_in, box)
        for op, coco in enumerate(COCO_TO_OPENPOSE18):
            if coco is None or scores[coco] < 0.3:
                continue
            np.testing.assert_allclose(person.body[op, :2], want[coco], atol=0.02)
            assert person.body[op, 2] == pytest.approx(0.9)
        np.testing.assert_allclose(person.body[1, :2], want[[5, 6]].mean(axis=0), atol=0.02)   # neck
        assert person.body[17, 2] == 0 and person.body[16, 2] == 0   # ears below threshold / missing
        np.testing.assert_allclose(person.face[:, :2], want[23:91], atol=0.02)
        np.testing.assert_allclose(person.feet[:, :2], want[17:23], atol=0.02)
        lh = person.left_hand
        np.testing.assert_allclose(lh[lh[:, 2] > 0, :2], want[91:112][lh[:, 2] > 0], atol=0.02)
        assert (lh[100 - 91:104 - 91, 2] == 0).all()
        np.testing.assert_allclose(person.right_hand[:, :2], want[112:133], atol=0.02)


def test_most_confident_person_by_default(estimator, kp_in):
    frame = estimator(_image())
    assert len(frame.people) == 1
    np.testing.assert_allclose(frame.people[0].body[0, :2], expected_keypoints(kp_in, BOX_B)[0], atol=0.02)


def test_keypoint_threshold(estimator, kp_in):
    frame = estimator(_image(), keypoint_threshold=0.1)
    p = frame.people[0]
    np.testing.assert_allclose(p.body[17], [*expected_keypoints(kp_in, BOX_B)[3], 0.2], atol=0.02)
    assert p.body[16, 2] == 0      # score 0 stays missing whatever the threshold
    assert (p.left_hand[:, 2] > 0).all()
    frame = estimator(_image(), keypoint_threshold=0.95)
    assert (frame.people[0].body[:, 2] == 0).all() and frame.people[0].face is None


def test_detector_threshold_and_no_people(models):
    strict = DWPoseEstimator(models["det"], models["pose"], det_threshold=0.8)
    assert len(strict(_image(), max_people=0).people) == 1
    none = DWPoseEstimator(models["det_none"], models["pose"])
    frame = none(_image())
    assert frame.people == () and (frame.width, frame.height) == (512, 360)
    assert not render_pose(frame).any()


def test_detector_with_nms_inside(models, kp_in):
    est = DWPoseEstimator(models["det_nms"], models["pose"])
    frame = est(_image())
    np.testing.assert_allclose(frame.people[0].body[0, :2], expected_keypoints(kp_in, BOX_A)[0], atol=0.02)


def test_channel_order_bgr_detector_rgb_pose(estimator):
    """Detector input is BGR (Megvii YOLOX), pose input RGB (DWPose config bgr_to_rgb=True)."""
    seen = {}
    det_inf, pose_inf = estimator._det.inference, estimator._pose.inference

    def spy(name, fn):
        def wrapped(img):
            seen.setdefault(name, img.copy())
            return fn(img)
        return wrapped

    estimator._det.inference = spy("det", det_inf)
    estimator._pose.inference = spy("pose", pose_inf)
    try:
        red = np.zeros((360, 512, 3), np.uint8)
        red[..., 0] = 255
        estimator(red)
    finally:
        del estimator._det.inference, estimator._pose.inference
    det_in = seen["det"]
    assert det_in[100, 100].tolist() == [0, 0, 255]      # BGR
    pose_in = seen["pose"]
    centre = pose_in[POSE_H // 2, POSE_W // 2]
    np.testing.assert_allclose(centre, [(255 - 123.675) / 58.395, -116.28 / 57.12, -103.53 / 57.375], rtol=1e-5)


def test_float_images_and_bad_images(estimator):
    img = _image()
    a = estimator(img)
    b = estimator(img.astype(np.float32) / 255.0)
    np.testing.assert_allclose(a.people[0].body, b.people[0].body)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        estimator(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        estimator(np.zeros((10, 10, 3), np.int32))
    with pytest.raises(ValueError, match="max_people"):
        estimator(img, max_people=-1)


def test_estimate_video_callbacks_and_pose_keypoint(estimator, kp_in):
    frames = np.stack([_image()] * 3)
    calls = []
    poses = estimator.estimate_video(frames, on_frame=lambda i, n: calls.append((i, n)))
    assert len(poses) == 3 and calls == [(1, 3), (2, 3), (3, 3)]
    data = json.loads(json.dumps(to_pose_keypoint(poses)))
    assert data[0]["canvas_width"] == 512 and data[0]["canvas_height"] == 360
    body = np.array(data[0]["people"][0]["pose_keypoints_2d"]).reshape(18, 3)
    want = expected_keypoints(kp_in, BOX_B)
    np.testing.assert_allclose(body[0], [*want[0], 1.0], atol=0.02)         # pixels, conf 1
    back = from_pose_keypoint(data)
    np.testing.assert_allclose(back[2].people[0].body[:, :2], poses[2].people[0].body[:, :2], atol=1e-4)

    class Stop(Exception):
        pass

    count = {"n": 0}

    def interrupt():
        count["n"] += 1
        if count["n"] == 2:
            raise Stop

    with pytest.raises(Stop):
        estimator.estimate_video(frames, check_interrupt=interrupt)
    with pytest.raises(ValueError, match="T, H, W, 3"):
        estimator.estimate_video(frames[0])


def test_missing_model_files_never_download(tmp_path, models):
    with pytest.raises(FileNotFoundError, match="detector"):
        DWPoseEstimator(tmp_path / "yolox_l.onnx", models["pose"])
    with pytest.raises(FileNotFoundError, match="pose"):
        DWPoseEstimator(models["det"], "https://example.invalid/dw-ll_ucoco_384.onnx")


def test_construction_is_quiet(models, capsys):
    DWPoseEstimator(models["det"], models["pose"])
    assert capsys.readouterr().out == ""


def test_rtmlib_missing_message(monkeypatch, models):
    monkeypatch.setitem(sys.modules, "rtmlib", None)
    with pytest.raises(ImportError, match=r"pip install --no-deps rtmlib==0\.0\.16"):
        pose_mod._import_rtmlib()
    with pytest.raises(ImportError, match="rtmlib"):
        DWPoseEstimator(models["det"], models["pose"])


def test_decode_yolox_and_nms_units():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, np.array([0.5, 0.9, 0.8]), 0.45).tolist() == [1, 2]
    assert nms(boxes, np.array([0.5, 0.9, 0.8]), 0.99).tolist() == [1, 2, 0]
    out = np.zeros((1, 3, 5), np.float32)
    out[0, 0] = (10, 20, 30, 40, 0.9)
    out[0, 1] = (0, 0, 5, 5, 0.1)
    b, s = decode_yolox(out, 2.0, (640, 640), 0.3, 0.45)
    np.testing.assert_allclose(b, [[5, 10, 15, 20]]) and np.testing.assert_allclose(s, [0.9])
    with pytest.raises(ValueError, match="anchors"):
        decode_yolox(np.zeros((1, 100, 85), np.float32), 1.0, (640, 640), 0.3, 0.45)
    with pytest.raises(ValueError, match="YOLOX output"):
        decode_yolox(np.zeros((1, 10, 4), np.float32), 1.0, (640, 640), 0.3, 0.45)
