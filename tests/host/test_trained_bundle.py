"""A bundle exported by the trainer is listed by the ComfyUI loader node and generates."""

import json
from pathlib import Path

import pytest

from movingbg.demo import write_demo_inputs
from movingbg.io.video import read_video

WF = Path(__file__).resolve().parents[2] / "workflows" / "api"


def test_trained_bundle_loads_in_the_host_and_generates(host, generation_weights, tmp_path):
    pytest.importorskip("accelerate")
    from movingbg.train import Trainer
    from tests.core.test_train import make_config, make_workspace

    ws = make_workspace(tmp_path / "ws")
    export_dir = Path(host.folder_paths.models_dir) / "movingbg"
    result = Trainer(make_config(ws, tmp_path / "run", max_steps=2, checkpoint_every=2,
                                 export_dir=str(export_dir))).run()
    name = result.export_path.name
    listed = host.nodes.NODE_CLASS_MAPPINGS["MovingBGLoadModel"].INPUT_TYPES()["required"]["bundle"][0]
    assert name in listed
    write_demo_inputs(host.input_dir, num_frames=6, width=64, height=64)
    prompt = json.loads((WF / "movingbg_generate_demo.json").read_text())
    prompt["9"]["inputs"]["bundle"] = name
    prompt["12"]["inputs"].update({"steps": 2, "clip_length": 4})
    r = host.run(prompt)
    assert r.ok, r.error
    item = r.outputs["14"]["gifs"][0]
    assert read_video(host.output_dir / item["subfolder"] / item["filename"]).frames.shape[:3] == (6, 64, 64)
