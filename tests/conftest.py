import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ["MOVINGBG_OFFLINE"] = "1"  # no test touches the network


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core box OpenMP spinning costs 4-10x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def host(tmp_path_factory):
    """The real ComfyUI with our pack loaded (one per test session)."""
    from tests.host.harness import Host

    return Host(tmp_path_factory.mktemp("comfy"))


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The real ComfyUI server, headless on 127.0.0.1, with our pack (one per test session)."""
    from tests.host.server import ComfyServer

    srv = ComfyServer(tmp_path_factory.mktemp("server"))
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def dwpose_models(host):
    """Small ONNX stand-ins with DWPose's I/O signatures, placed where the pose node looks for weights."""
    from movingbg.preprocess.pose import DWPOSE_DETECTOR, DWPOSE_POSE
    from tests.fixtures.dummy_onnx import make_detector_onnx, make_simcc_pose_onnx, wholebody_template

    folder = Path(host.folder_paths.models_dir) / "movingbg" / "pose"
    folder.mkdir(parents=True, exist_ok=True)
    det = make_detector_onnx(folder / DWPOSE_DETECTOR.filename, [(200, 120, 440, 600, 0.9)])
    pose = make_simcc_pose_onnx(folder / DWPOSE_POSE.filename, wholebody_template())
    return det, pose


@pytest.fixture(scope="session")
def generation_weights(host):
    """A tiny MovingBG bundle and a (random) SD1.5-layout VAE in the host's model folders."""
    from tests.fixtures.weights import write_generation_weights

    bundle, vae_path = write_generation_weights(Path(host.folder_paths.models_dir))
    host.folder_paths.add_model_folder_path("vae", str(vae_path.parent))
    return bundle, vae_path
