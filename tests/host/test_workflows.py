"""The shipped workflows: registered node types, UI form == API form, and they execute in the real host."""

import json
from pathlib import Path

import numpy as np
import torch
import pytest

from movingbg.demo import write_demo_inputs
from movingbg.io.video import read_video
from tests.host.workflow_tools import FRONTEND_ONLY, node_def, renumber, ui_to_api

WF = Path(__file__).resolve().parents[2] / "workflows"
API = sorted((WF / "api").glob("*.json"))
UI = sorted(WF.glob("*.json"))


def _strip(prompt):
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def test_every_shipped_workflow_exists_in_both_forms():
    assert API, "no API workflows shipped"
    assert {p.name for p in API} == {p.name for p in UI}


@pytest.mark.parametrize("path", API + UI, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_node_type_is_registered(host, path):
    data = json.loads(path.read_text())
    types = {n["type"] for n in data["nodes"]} if "nodes" in data else {n["class_type"] for n in data.values()}
    missing = sorted(t for t in types - FRONTEND_ONLY if t not in host.nodes.NODE_CLASS_MAPPINGS)
    assert not missing, f"{path.name} uses unregistered node types {missing}"


@pytest.mark.parametrize("path", UI, ids=lambda p: p.name)
def test_ui_form_is_the_api_form(host, path):
    ui = json.loads(path.read_text())
    defs = {n["type"]: node_def(host.nodes.NODE_CLASS_MAPPINGS[n["type"]]) for n in ui["nodes"]
            if n["type"] not in FRONTEND_ONLY}
    api = _strip(json.loads((WF / "api" / path.name).read_text()))
    for node in api.values():  # compare what this host defines (newer hosts add inputs, e.g. CLIPVisionEncode.crop)
        names = {i["name"] for i in node_def(host.nodes.NODE_CLASS_MAPPINGS[node["class_type"]])["inputs"]}
        node["inputs"] = {k: v for k, v in node["inputs"].items() if k in names}
    assert ui_to_api(ui, defs) == renumber(api)
    assert any(n["type"] == "Note" for n in ui["nodes"]), "each UI workflow carries a note on weights"


def _saved(host, result, node_id):
    items = result.outputs[node_id].get("gifs") or result.outputs[node_id].get("images")
    item = items[0]
    return host.output_dir / item["subfolder"] / item["filename"]


def test_demo_workflow_executes_in_host(host):
    write_demo_inputs(host.input_dir, num_frames=12, width=160, height=128)
    prompt = json.loads((WF / "api" / "movingbg_extract_motion_demo.json").read_text())
    r = host.run(prompt)
    assert r.ok, r.error
    for node_id in ("8", "9", "10", "11"):
        video = read_video(_saved(host, r, node_id))
        assert video.frames.shape[:3] == (12, 128, 160)
    tracks = host.node_output("5", 0)
    assert tracks.num_frames == 12 and tracks.visible.sum(axis=1).min() >= 10
    pose_video = read_video(_saved(host, r, "8")).frames
    assert pose_video.max() > 100 and (pose_video.max(axis=-1) < 20).mean() > 0.7  # skeleton on black


def test_dwpose_workflow_executes_with_local_weights(host, dwpose_models):
    frames = np.zeros((6, 96, 128, 3), np.uint8)
    frames[:, :, :, 1] = np.linspace(0, 255, 128, dtype=np.uint8)[None, None, :]
    from movingbg.io.video import write_video

    write_video(host.input_dir / "driving.mp4", frames, 8.0)
    prompt = json.loads((WF / "api" / "movingbg_extract_motion.json").read_text())
    prompt["1"]["inputs"]["width"] = 128
    r = host.run(prompt)
    assert r.ok, r.error
    kp = host.node_output("2", 1)
    assert len(kp) == 6 and kp[0]["people"], "the dummy DWPose model places one person in every frame"


def test_generation_demo_workflow_makes_every_frame_from_several_clips(host, generation_weights):
    write_demo_inputs(host.input_dir, num_frames=10, width=64, height=64)
    prompt = json.loads((WF / "api" / "movingbg_generate_demo.json").read_text())
    prompt["12"]["inputs"].update({"steps": 2, "clip_length": 4, "seed": 7})  # 10 frames -> 3 clips (4, +3, +3)
    r = host.run(prompt)
    assert r.ok, r.error
    latent = host.node_output("12", 0)["samples"]
    assert tuple(latent.shape) == (10, 4, 8, 8)
    video = read_video(_saved(host, r, "14"))
    assert video.frames.shape[:3] == (10, 64, 64)
    # same seed -> same latents (the executor re-runs the sampler because the seed input changed and back)
    prompt["12"]["inputs"]["seed"] = 8
    assert host.run(prompt).ok
    other = host.node_output("12", 0)["samples"]
    prompt["12"]["inputs"]["seed"] = 7
    assert host.run(prompt).ok
    again = host.node_output("12", 0)["samples"]
    assert torch.equal(again, latent) and not torch.equal(other, latent)
    # the bundle went through ComfyUI's model management (ModelPatcher + load_models_gpu)
    import comfy.model_management as mm

    patcher = host.node_output("9", 0)
    assert any(getattr(m, "model", None) is patcher for m in mm.current_loaded_models)


def test_build_bundle_node_reports_bad_inputs(host):
    base = {"source": "moore_animateanyone", "checkpoint": "(none)", "motion_module": "(none)",
            "moore_folder": "/nonexistent/moore", "bundle_name": "x", "dtype": "fp16"}
    r = host.run({"1": {"class_type": "MovingBGBuildBundle", "inputs": base}})
    assert not r.ok and "'moore_folder'" in r.error["exception_message"]
    r = host.run({"1": {"class_type": "MovingBGBuildBundle", "inputs": dict(base, bundle_name="../evil")}})
    assert not r.ok and "'bundle_name'" in r.error["exception_message"]


def test_cancel_stops_the_sampler_within_a_step_and_host_stays_ready(host, generation_weights):
    import comfy.model_management as mm
    import comfy.utils

    write_demo_inputs(host.input_dir, num_frames=10, width=64, height=64)
    prompt = json.loads((WF / "api" / "movingbg_generate_demo.json").read_text())
    prompt["12"]["inputs"].update({"steps": 6, "clip_length": 4, "seed": 11})
    updates = []

    def hook(value, total, *args, **kwargs):
        updates.append((value, total))
        if total == 18 and value == 2:  # sampler bar: 3 clips x 6 steps; press cancel during step 3
            mm.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        r = host.run(prompt)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert not r.ok and any(m[0] == "execution_interrupted" for m in r.messages)
    sampler_steps = [v for v, t in updates if t == 18]
    assert max(sampler_steps) <= 3, sampler_steps  # stopped within one step of the cancel
    prompt["12"]["inputs"]["steps"] = 2
    assert host.run(prompt).ok  # ready for the next prompt
