import numpy as np

from movingbg.io.video import write_video


def test_server_lists_and_runs_pack_node(server):
    info = server.client.get_json("/object_info/MovingBGLoadVideo")
    assert "MovingBGLoadVideo" in info, "pack node not registered in the server"
    frames = np.full((4, 32, 32, 3), 90, np.uint8)
    write_video(server.input_dir / "srv.mp4", frames, 8.0)
    prompt = {
        "1": {"class_type": "MovingBGLoadVideo", "inputs": {"video": "srv.mp4", "max_frames": 0, "start_frame": 0,
                                                            "every_nth": 1, "width": 0, "height": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "srv"}},
    }
    entry = server.client.wait(server.client.queue(prompt), timeout=120)
    assert len(entry["outputs"]["2"]["images"]) == 4
