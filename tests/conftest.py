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
