import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "2")


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
