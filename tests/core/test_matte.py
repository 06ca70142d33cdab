import numpy as np
import pytest

from movingbg.preprocess.matte import U2NetHumanSeg, body_seed_mask, matte_from_pose, refine_matte
from movingbg.synth.scene import make_clip


def _iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def test_pose_grabcut_matches_ground_truth_matte():
    clip = make_clip(seed=3, num_frames=6, width=160, height=120)
    alpha = matte_from_pose(clip.frames, [[k] for k in clip.keypoints])
    assert alpha.shape == clip.alpha.shape and alpha.dtype == np.float32
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0
    iou = _iou(alpha >= 0.5, clip.alpha >= 0.5)
    assert iou > 0.8, iou
    # GrabCut refines the seed silhouette: better than the seeds alone
    import cv2
    seeds = np.stack([body_seed_mask([k], 160, 120) for k in clip.keypoints])
    seed_fg = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    assert iou >= _iou(seed_fg, clip.alpha >= 0.5) - 0.02


def test_no_person_gives_empty_matte_and_length_mismatch_errors():
    frames = np.full((2, 32, 32, 3), 100, np.uint8)
    missing = np.zeros((18, 3), np.float32)
    alpha = matte_from_pose(frames, [[missing], []])
    assert alpha.shape == (2, 32, 32) and alpha.max() == 0
    with pytest.raises(ValueError, match="pose has 1 frames"):
        matte_from_pose(frames, [[missing]])


def test_refine_grow_and_shrink():
    a = np.zeros((1, 21, 21), np.float32)
    a[0, 10, 10] = 1
    assert refine_matte(a, grow=2).sum() > 1
    assert refine_matte(refine_matte(a, grow=3), grow=-3).sum() >= 1
    assert set(np.unique(refine_matte(a * 0.7, threshold=0.5))) == {0.0, 1.0}


def test_u2net_backend_runs_an_onnx_model_with_the_published_signature(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    # a stand-in with U^2-Net's I/O: input (1,3,320,320) -> d0 (1,1,320,320); predicts "red channel"
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])
    out = helper.make_tensor_value_info("d0", TensorProto.FLOAT, [1, 1, 320, 320])
    starts = helper.make_tensor("s", TensorProto.INT64, [1], [0])
    ends = helper.make_tensor("e", TensorProto.INT64, [1], [1])
    axes = helper.make_tensor("a", TensorProto.INT64, [1], [1])
    node = helper.make_node("Slice", ["input.1", "s", "e", "a"], ["d0"])
    graph = helper.make_graph([node], "u2net_stub", [inp], [out], [starts, ends, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "u2net_human_seg.onnx"
    onnx.save(model, str(path))
    frames = np.zeros((2, 90, 120, 3), np.uint8)
    frames[:, 30:60, 40:80, 0] = 255  # a red block = "person"
    alpha = U2NetHumanSeg(str(path))(frames)
    assert alpha.shape == (2, 90, 120)
    assert alpha[:, 40:50, 50:70].min() > 0.9 and alpha[:, :20].max() < 0.1
