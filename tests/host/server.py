"""Start the real ComfyUI server headless on 127.0.0.1 with our pack, for HTTP-level tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from movingbg.api import ComfyClient

from .comfyui_host import ensure_comfyui
from .harness import link_pack


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, workdir: Path, startup_timeout: float = 120.0):
        self.root = ensure_comfyui()
        self.workdir = Path(workdir)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.input_dir = self.workdir / "input"
        self.output_dir = self.workdir / "output"
        self.models_dir = self.workdir / "models"
        for d in (self.input_dir, self.output_dir, self.models_dir):
            d.mkdir(parents=True, exist_ok=True)
        link_pack(self.workdir / "custom_nodes")
        extra = self.workdir / "extra_model_paths.yaml"
        extra.write_text(f"movingbg_test:\n  base_path: {self.workdir}\n  custom_nodes: custom_nodes\n"
                         f"  movingbg_pose: models/movingbg/pose\n  movingbg_tracker: models/movingbg/tracker\n"
                         f"  movingbg_matte: models/movingbg/matte\n")
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--output-directory", str(self.output_dir), "--input-directory", str(self.input_dir),
               "--extra-model-paths-config", str(extra), "--disable-auto-launch"]
        if (self.root / "app" / "database").is_dir():  # current ComfyUI keeps a database
            cmd += ["--database-url", "sqlite:///:memory:"]
        self.log_path = self.workdir / "server.log"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.client = ComfyClient(self.url, timeout=60.0)
        deadline = time.monotonic() + startup_timeout
        while not self.client.is_ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"ComfyUI server did not start; log:\n{self.log()[-4000:]}")
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
