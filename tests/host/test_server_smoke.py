"""The real ComfyUI server, headless on 127.0.0.1: /object_info, /prompt, /history, /view, and our API client."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from movingbg.api import PromptValidationError, output_files
from movingbg.demo import DEMO_POSE, write_demo_inputs
from movingbg.io.video import read_video

WF = Path(__file__).resolve().parents[2] / "workflows" / "api"


def test_server_lists_every_pack_node(server, host):
    for name in host.pack_nodes:
        info = server.client.get_json(f"/object_info/{name}")
        assert name in info, f"{name} not registered in the server"
        spec = info[name]
        assert spec["description"], f"{name} has no DESCRIPTION"


def test_demo_workflow_through_prompt_and_history(server, tmp_path):
    write_demo_inputs(server.input_dir, num_frames=10, width=128, height=96)
    prompt = json.loads((WF / "movingbg_extract_motion_demo.json").read_text())
    entry = server.client.wait(server.client.queue(prompt), timeout=300)
    files = [server.client.download(info, tmp_path) for info in output_files(entry)]
    assert len(files) == 4
    for f in files:
        assert read_video(f).frames.shape[:3] == (10, 96, 128)


def test_validation_errors_are_reported_clearly(server):
    prompt = json.loads((WF / "movingbg_extract_motion_demo.json").read_text())
    prompt["1"]["inputs"]["video"] = "no_such_video.mp4"
    with pytest.raises(PromptValidationError) as info:
        server.client.queue(prompt)
    assert "no_such_video.mp4" in str(info.value) and "node 1" in str(info.value)


def test_api_command_uploads_substitutes_and_downloads(server, tmp_path):
    inputs = tmp_path / "in"
    video, pose = write_demo_inputs(inputs, num_frames=6, width=96, height=64)
    renamed = video.with_name("studio_clip.mp4")
    video.rename(renamed)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "movingbg.api", str(WF / "movingbg_extract_motion_demo.json"), "--server",
           server.url, "--upload", str(renamed), "--upload", str(pose), "--set", "1.video=studio_clip.mp4",
           "--set", f"2.file={DEMO_POSE}", "--set", "1.max_frames=0", "--out", str(out)]
    res = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    videos = sorted(out.glob("*.mp4"))
    assert len(videos) == 4 and all(read_video(v).frames.shape[0] == 6 for v in videos)
    bad = subprocess.run(cmd[:6] + ["--set", "1.video=missing.mp4"], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "rejected the workflow" in bad.stderr


def test_generation_through_prompt_and_history(server, tmp_path):
    from tests.fixtures.weights import write_generation_weights

    write_generation_weights(server.models_dir)
    write_demo_inputs(server.input_dir, num_frames=9, width=64, height=64)
    prompt = json.loads((WF / "movingbg_generate_demo.json").read_text())
    prompt["12"]["inputs"].update({"steps": 2, "clip_length": 4})  # 9 frames -> 3 clips
    entry = server.client.wait(server.client.queue(prompt), timeout=600)
    video = [f for f in output_files(entry) if "generated" in f["filename"]]
    assert len(video) == 1
    assert read_video(server.client.download(video[0], tmp_path)).frames.shape[:3] == (9, 64, 64)


def test_demo_command_runs_extraction_and_generation(tmp_path):
    from tests.fixtures.weights import write_generation_weights

    bundle, vae = write_generation_weights(tmp_path / "weights")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "movingbg.demo", "--out", str(out), "--bundle", str(bundle), "--vae", str(vae),
           "--frames", "6", "--width", "64", "--height", "64", "--steps", "2"]
    res = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert any(n.startswith("demo_generated") for n in names) and any(n.startswith("demo_tracks") for n in names)
    generated = next(out.glob("demo_generated*.mp4"))
    assert read_video(generated).frames.shape[:3] == (6, 64, 64)


def test_readme_main_job_generates_with_the_shipped_model(tmp_path):
    """``python -m movingbg.demo`` with no weights given: extraction + generation with movingbg/assets' model."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "movingbg.demo", "--out", str(out), "--frames", "10", "--steps", "2"]
    res = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    generated = next(out.glob("demo_generated*.mp4"))
    assert read_video(generated).frames.shape[:3] == (10, 64, 64)  # 10 frames from 2 clips of 8
    assert any(p.name.startswith("demo_matte") for p in out.iterdir())
