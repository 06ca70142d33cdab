import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ["MOVINGBG_OFFLINE"] = "1"  # no test touches the network


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
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from movingbg.models.bundle import save_bundle
    from movingbg.models.config import MovingBGConfig
    from movingbg.models.generator import MovingBGModel

    models = Path(host.folder_paths.models_dir)
    torch.manual_seed(0)
    model = MovingBGModel(MovingBGConfig.tiny())
    bundle = save_bundle(model, models / "movingbg" / "movingbg_demo.safetensors")
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4)
    vae_path = models / "vae" / "movingbg_demo_vae.safetensors"
    vae_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(vae_path))
    host.folder_paths.add_model_folder_path("vae", str(vae_path.parent))
    return bundle, vae_path
