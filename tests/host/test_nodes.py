"""Every node executes inside the real ComfyUI; bad input gives a clear error naming the input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from movingbg.synth.scene import make_clip


@pytest.fixture(scope="module")
def clip(host):
    """A synthetic clip as a lossless PNG folder in the input dir (name 'clip'), plus its ground truth."""
    c = make_clip(seed=5, num_frames=8, width=128, height=96)
    folder = host.input_dir / "clip"
    folder.mkdir(exist_ok=True)
    for i, f in enumerate(c.frames):
        Image.fromarray(f).save(folder / f"{i:03d}.png")
    return c


def load(name="clip", **kw):
    inputs = {"video": name, "max_frames": 0, "start_frame": 0, "every_nth": 1, "width": 0, "height": 0}
    inputs.update(kw)
    return {"class_type": "MovingBGLoadVideo", "inputs": inputs}


def preview(src):
    return {"class_type": "PreviewImage", "inputs": {"images": src}}


def pose_json(host, c, name="clip_pose.json"):
    from movingbg.preprocess.pose_format import FramePose, PersonPose, to_pose_keypoint

    poses = [FramePose(c.frames.shape[2], c.frames.shape[1], (PersonPose(k),)) for k in c.keypoints]
    (host.input_dir / name).write_text(json.dumps(to_pose_keypoint(poses)))
    return name


def run_ok(host, prompt):
    r = host.run(prompt)
    assert r.ok, r.error
    return r


def run_error(host, prompt):
    r = host.run(prompt)
    assert not r.ok, "expected a failure"
    if r.error and "error" in r.error:  # rejected by validation
        return json.dumps(r.error)
    return r.error["exception_message"]


def test_load_video_options(host, clip):
    run_ok(host, {"1": load(max_frames=3, start_frame=2, every_nth=2, width=64), "2": preview(["1", 0])})
    frames = host.node_output("1", 0)
    assert tuple(frames.shape) == (3, 48, 64, 3)
    assert host.node_output("1", 2) == 3


def test_pose_nodes_render_retarget_and_load(host, clip):
    name = pose_json(host, clip)
    prompt = {
        "1": {"class_type": "MovingBGLoadPoseKeypoints", "inputs": {"file": name}},
        "2": {"class_type": "MovingBGRenderPose", "inputs": {"pose_keypoint": ["1", 0], "width": 0, "height": 0,
                                                             "draw_body": True, "draw_hands": True, "draw_face": True}},
        "3": {"class_type": "MovingBGRetargetPose", "inputs": {"driving_pose": ["1", 0], "reference_pose": ["1", 0],
                                                               "match_proportions": True, "match_scale": True,
                                                               "match_position": True, "draw_body": True,
                                                               "draw_hands": True, "draw_face": True}},
        "4": preview(["2", 0]), "5": preview(["3", 1]),
    }
    run_ok(host, prompt)
    renders = host.node_output("2", 0)
    assert tuple(renders.shape) == (8, 96, 128, 3) and renders.max() > 0.5
    retargeted = host.node_output("3", 0)
    body0 = np.array(retargeted[0]["people"][0]["pose_keypoints_2d"]).reshape(18, 3)
    assert np.allclose(body0[1, :2], clip.keypoints[0, 1, :2], atol=0.5)  # neck stays on the reference


def test_extract_pose_with_dummy_dwpose(host, clip, dwpose_models):
    run_ok(host, {"1": load(), "2": {"class_type": "MovingBGExtractPose", "inputs": {
        "images": ["1", 0], "max_people": 1, "detect_threshold": 0.3, "keypoint_threshold": 0.3,
        "draw_body": True, "draw_hands": True, "draw_face": True}}, "3": preview(["2", 0])})
    kp = host.node_output("2", 1)
    assert len(kp) == 8 and kp[0]["canvas_width"] == 128 and len(kp[0]["people"]) == 1


def test_matte_then_tracks_then_render(host, clip):
    name = pose_json(host, clip)
    prompt = {
        "1": load(), "2": {"class_type": "MovingBGLoadPoseKeypoints", "inputs": {"file": name}},
        "3": {"class_type": "MovingBGHumanMatte", "inputs": {"images": ["1", 0], "method": "pose_grabcut",
                                                             "grow": 0, "feather": 1.0, "pose_keypoint": ["2", 0]}},
        "4": {"class_type": "MovingBGExtractTracks", "inputs": {"images": ["1", 0], "mask": ["3", 0],
                                                                "backend": "klt", "num_points": 30, "min_distance": 10,
                                                                "reseed": True, "reseed_every": 4}},
        "5": {"class_type": "MovingBGRenderTracks", "inputs": {"tracks": ["4", 0], "radius": 0, "trail": 2,
                                                               "images": ["1", 0]}},
        "6": {"class_type": "MovingBGCameraTracks", "inputs": {"images": ["1", 0], "move": "zoom_in",
                                                               "strength": 0.3, "easing": "linear",
                                                               "num_points": 20, "seed": 1, "mask": ["3", 0]}},
        "7": preview(["5", 0]), "8": preview(["6", 1]),
    }
    run_ok(host, prompt)
    mask = host.node_output("3", 0).numpy()
    iou = ((mask >= 0.5) & (clip.alpha >= 0.5)).sum() / ((mask >= 0.5) | (clip.alpha >= 0.5)).sum()
    assert iou > 0.75, iou
    tracks = host.node_output("4", 0)
    t = np.arange(tracks.num_frames)[:, None]
    xi = np.clip(np.rint(tracks.points[..., 0]).astype(int), 0, 127)
    yi = np.clip(np.rint(tracks.points[..., 1]).astype(int), 0, 95)
    assert not (tracks.visible & (mask[t, yi, xi] >= 0.5)).any(), "a visible track lies on the person"
    assert tracks.visible.sum(axis=1).min() >= 15
    cam = host.node_output("6", 0)
    assert cam.num_frames == 8 and cam.num_tracks >= 20


def test_render_tracks_draws_the_maps_the_connected_model_was_trained_on(host, clip):
    from pathlib import Path

    from movingbg.models.bundle import save_bundle
    from movingbg.models.config import MovingBGConfig
    from movingbg.models.generator import MovingBGModel

    torch.manual_seed(0)
    name = "movingbg_test_trail3.safetensors"
    save_bundle(MovingBGModel(MovingBGConfig.tiny(track_trail=3)), Path(host.folder_paths.models_dir) / "movingbg" / name)
    cam = {"class_type": "MovingBGCameraTracks", "inputs": {"images": ["1", 0], "move": "pan_left", "strength": 0.5,
                                                          "easing": "linear", "num_points": 20, "seed": 1}}
    model = {"class_type": "MovingBGLoadModel", "inputs": {"bundle": name, "dtype": "auto",
                                                          "apply_to": "denoising + reference"}}

    def render(trail, with_model):
        inputs = {"tracks": ["2", 0], "radius": 0, "trail": trail}
        if with_model:
            inputs["movingbg_model"] = ["4", 0]
        return {"class_type": "MovingBGRenderTracks", "inputs": inputs}

    run_ok(host, {"1": load(), "2": cam, "4": model, "5": render(0, True), "6": render(3, False), "7": render(0, False),
                  "8": preview(["5", 0]), "9": preview(["6", 0]), "10": preview(["7", 0])})
    by_model, trail3, discs = (host.node_output(k, 0) for k in ("5", "6", "7"))
    assert torch.equal(by_model, trail3), "the model's trail (3) must replace the widget's (0)"
    assert not torch.equal(by_model, discs)


def test_u2net_matte_with_local_weights(host, clip, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])
    out = helper.make_tensor_value_info("d0", TensorProto.FLOAT, [1, 1, 320, 320])
    node = helper.make_node("ReduceMean", ["input.1"], ["d0"], axes=[1], keepdims=1)
    model = helper.make_model(helper.make_graph([node], "u2net_stub", [inp], [out]),
                              opset_imports=[helper.make_opsetid("", 13)])
    folder = host.input_dir.parent / "models" / "movingbg" / "matte"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "u2net_human_seg.onnx"))
    run_ok(host, {"1": load(), "2": {"class_type": "MovingBGHumanMatte", "inputs": {
        "images": ["1", 0], "method": "u2net_human_seg", "grow": 0, "feather": 0.0}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}}, "4": preview(["3", 0])})
    assert tuple(host.node_output("2", 0).shape) == (8, 96, 128)


@pytest.mark.parametrize("fmt", ["mp4", "webm", "gif", "webp"])
def test_save_video_formats(host, clip, fmt):
    r = run_ok(host, {"1": load(), "2": {"class_type": "MovingBGSaveVideo", "inputs": {
        "images": ["1", 0], "fps": ["1", 1], "filename_prefix": f"t/{fmt}", "format": fmt, "quality": 20}}})
    items = r.outputs["2"].get("gifs") or r.outputs["2"].get("images")
    path = host.output_dir / items[0]["subfolder"] / items[0]["filename"]
    assert path.suffix == "." + fmt and path.stat().st_size > 0
    assert not list(path.parent.glob(".tmp-*")), "temporary file left behind"


# ---- bad input -------------------------------------------------------------------------------

def _tracks_prompt(mask_src):
    return {"1": load(), "9": load(**mask_src) if isinstance(mask_src, dict) else None}


def test_mask_with_wrong_count_or_size_is_named(host, clip):
    for kw, expect in (({"max_frames": 5}, "has 5 frames"), ({"width": 64}, "'mask' is 64x48")):
        prompt = {"1": load(), "2": load(**kw),
                  "3": {"class_type": "ImageToMask", "inputs": {"image": ["2", 0], "channel": "red"}},
                  "4": {"class_type": "MovingBGExtractTracks", "inputs": {
                      "images": ["1", 0], "mask": ["3", 0], "backend": "klt", "num_points": 10, "min_distance": 8,
                      "reseed": True, "reseed_every": 0}}, "5": preview(["4", 1])}
        msg = run_error(host, prompt)
        assert "'mask'" in msg and expect in msg, msg


def test_one_frame_and_all_person_mask_give_results_with_warnings(host, clip, caplog):
    solid = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 128, "height": 96}}
    prompt = {"1": load(max_frames=1), "2": solid,
              "3": {"class_type": "MovingBGExtractTracks", "inputs": {
                  "images": ["1", 0], "mask": ["2", 0], "backend": "klt", "num_points": 10, "min_distance": 8,
                  "reseed": True, "reseed_every": 0}}, "4": preview(["3", 1])}
    with caplog.at_level("WARNING"):
        run_ok(host, prompt)
    tracks = host.node_output("3", 0)
    assert tracks.num_tracks == 0 and tracks.num_frames == 1
    assert "single frame" in caplog.text and "no background" in caplog.text


def test_empty_and_non_video_files(host, clip):
    (host.input_dir / "empty.mp4").write_bytes(b"")
    (host.input_dir / "notes.mp4").write_bytes(b"this is not a video" * 10)
    assert "empty file" in run_error(host, {"1": load("empty.mp4"), "2": preview(["1", 0])})
    assert "could not be opened as a video" in run_error(host, {"1": load("notes.mp4"), "2": preview(["1", 0])})
    (host.input_dir / "readme.txt").write_text("hello")
    assert "readme.txt" in run_error(host, {"1": load("readme.txt"), "2": preview(["1", 0])})


def test_missing_weights_name_files_urls_and_folder(host, clip):
    msg = run_error(host, {"1": load(), "2": {"class_type": "MovingBGExtractTracks", "inputs": {
        "images": ["1", 0], "mask": ["1", 0], "backend": "cotracker3", "num_points": 5, "min_distance": 8,
        "reseed": False, "reseed_every": 0}}, "3": preview(["2", 1])})
    assert "mask" in msg  # IMAGE into MASK is caught by validation
    prompt = {"1": load(), "2": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 128, "height": 96}},
              "3": {"class_type": "MovingBGExtractTracks", "inputs": {
                  "images": ["1", 0], "mask": ["2", 0], "backend": "cotracker3", "num_points": 5, "min_distance": 8,
                  "reseed": False, "reseed_every": 0}}, "4": preview(["3", 1])}
    msg = run_error(host, prompt)
    assert "scaled_offline.pth" in msg and "huggingface.co/facebook/cotracker3" in msg and "tracker" in msg, msg


def test_bad_pose_keypoint_and_missing_pose_are_named(host, clip):
    (host.input_dir / "bad_pose.json").write_text(json.dumps([{"people": [{"pose_keypoints_2d": [1, 2]}],
                                                               "canvas_width": 128, "canvas_height": 96}]))
    msg = run_error(host, {"1": {"class_type": "MovingBGLoadPoseKeypoints", "inputs": {"file": "bad_pose.json"}},
                           "2": {"class_type": "MovingBGRenderPose", "inputs": {
                               "pose_keypoint": ["1", 0], "width": 0, "height": 0, "draw_body": True,
                               "draw_hands": True, "draw_face": True}}, "3": preview(["2", 0])})
    assert "'file'" in msg and "pose_keypoints_2d" in msg, msg
    msg = run_error(host, {"1": load(), "2": {"class_type": "MovingBGHumanMatte", "inputs": {
        "images": ["1", 0], "method": "pose_grabcut", "grow": 0, "feather": 1.0}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}}, "4": preview(["3", 0])})
    assert "'pose_keypoint' is required" in msg


def test_host_stays_usable_after_errors(host, clip):
    run_ok(host, {"1": load(max_frames=2), "2": preview(["1", 0])})
