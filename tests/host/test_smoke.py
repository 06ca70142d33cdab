import numpy as np

from movingbg.io.video import write_video


def test_pack_registers(host):
    assert "MovingBGLoadVideo" in host.pack_nodes


def test_load_video_runs(host):
    frames = np.zeros((6, 48, 64, 3), np.uint8)
    frames[:, 10:20, 10:30] = 200
    write_video(host.input_dir / "smoke.mp4", frames, 8.0)
    prompt = {
        "1": {"class_type": "MovingBGLoadVideo", "inputs": {"video": "smoke.mp4", "max_frames": 0, "start_frame": 0,
                                                            "every_nth": 1, "width": 0, "height": 0}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    r = host.run(prompt)
    assert r.ok, r.error
    assert len(r.outputs["2"]["images"]) == 6
