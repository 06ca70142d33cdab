"""Drive a running ComfyUI over HTTP: upload inputs, queue an API-format workflow, wait, download outputs.

    python -m movingbg.api workflows/api/movingbg_extract_motion.json --server http://127.0.0.1:8188 \
        --set 1.video=dance.mp4 --upload dance.mp4 --out results/

Only the standard library is used, so studios can call it from any Python.
"""

from __future__ import annotations

import argparse
import json
import logging
import mimetypes
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Optional

logger = logging.getLogger(__name__)


class ComfyAPIError(RuntimeError):
    """The server refused a request; ``details`` holds its JSON answer when there was one."""

    def __init__(self, message: str, details: Any = None):
        super().__init__(message)
        self.details = details


class PromptValidationError(ComfyAPIError):
    """``/prompt`` rejected the workflow (unknown node, bad input value, missing link...)."""


def _format_node_errors(answer: dict) -> str:
    lines = []
    err = answer.get("error") or {}
    if isinstance(err, dict) and err.get("message"):
        lines.append(f"{err.get('message')}: {err.get('details', '')}".rstrip(": "))
    for node_id, info in (answer.get("node_errors") or {}).items():
        for e in info.get("errors", []):
            lines.append(f"node {node_id} ({info.get('class_type', '?')}): {e.get('message')} - {e.get('details', '')}")
    return "\n".join(lines) or json.dumps(answer)[:2000]


class ComfyClient:
    def __init__(self, server: str = "http://127.0.0.1:8188", timeout: float = 30.0):
        self.server = server.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    def _request(self, path: str, data: Optional[bytes] = None, headers: Optional[dict] = None) -> bytes:
        req = urllib.request.Request(self.server + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                details = json.loads(body)
            except ValueError:
                details = body.decode(errors="replace")
            if path == "/prompt" and isinstance(details, dict):
                raise PromptValidationError("ComfyUI rejected the workflow:\n" + _format_node_errors(details),
                                            details) from None
            raise ComfyAPIError(f"{path}: HTTP {exc.code}: {details}", details) from None
        except urllib.error.URLError as exc:
            raise ComfyAPIError(f"cannot reach ComfyUI at {self.server}: {exc.reason}") from None

    def get_json(self, path: str) -> Any:
        return json.loads(self._request(path))

    def is_ready(self) -> bool:
        try:
            self.get_json("/system_stats")
            return True
        except ComfyAPIError:
            return False

    def upload(self, path: Path, subfolder: str = "", overwrite: bool = True) -> str:
        """Upload a file into the server's input folder; returns the name to use in the workflow."""
        path = Path(path)
        boundary = uuid.uuid4().hex
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        parts = []
        for name, value in (("subfolder", subfolder), ("overwrite", "true" if overwrite else "false"),
                            ("type", "input")):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + path.read_bytes() + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        answer = json.loads(self._request("/upload/image", b"".join(parts),
                                          {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def queue(self, prompt: dict) -> str:
        body = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        answer = json.loads(self._request("/prompt", body, {"Content-Type": "application/json"}))
        if answer.get("node_errors"):
            raise PromptValidationError("ComfyUI rejected the workflow:\n" + _format_node_errors(answer), answer)
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 3600.0, poll: float = 0.5) -> dict:
        """Poll ``/history/<id>`` until the prompt finished; returns its history entry.

        Raises ComfyAPIError when execution failed (with the node's exception message) or timed out.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            if entry is not None:
                status = entry.get("status") or {}
                if status.get("status_str", "success") != "success":
                    msgs = [m for m in status.get("messages", []) if m[0] == "execution_error"]
                    detail = msgs[0][1] if msgs else status
                    text = detail.get("exception_message", detail) if isinstance(detail, dict) else detail
                    node = detail.get("node_type", "?") if isinstance(detail, dict) else "?"
                    raise ComfyAPIError(f"execution failed in {node}: {text}", detail)
                return entry
            time.sleep(poll)
        raise ComfyAPIError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def download(self, file_info: dict, dest_dir: Path) -> Path:
        query = urllib.parse.urlencode({"filename": file_info["filename"], "subfolder": file_info.get("subfolder", ""),
                                        "type": file_info.get("type", "output")})
        dest = Path(dest_dir) / file_info["filename"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        tmp.write_bytes(self._request(f"/view?{query}"))
        tmp.replace(dest)
        return dest


def output_files(entry: dict) -> list[dict]:
    """All file records (images, gifs, videos) in a history entry's outputs."""
    files = []
    for node_out in entry.get("outputs", {}).values():
        for key in ("images", "gifs", "videos", "animated"):
            for item in node_out.get(key, []) or []:
                if isinstance(item, dict) and "filename" in item:
                    files.append(item)
    return files


def set_input(prompt: dict, spec: str) -> None:
    """Apply ``NODE.INPUT=VALUE`` (VALUE parsed as JSON when it parses, else kept as a string)."""
    try:
        target, raw = spec.split("=", 1)
        node_id, name = target.split(".", 1)
    except ValueError:
        raise ValueError(f"--set expects NODE_ID.INPUT=VALUE, got '{spec}'") from None
    if node_id not in prompt:
        raise ValueError(f"--set {spec}: node '{node_id}' is not in the workflow (nodes: {', '.join(prompt)})")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    prompt[node_id]["inputs"][name] = value


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m movingbg.api", description=__doc__.split("\n")[0])
    ap.add_argument("workflow", type=Path, help="API-format workflow JSON (workflows/api/*.json)")
    ap.add_argument("--server", default="http://127.0.0.1:8188")
    ap.add_argument("--upload", action="append", default=[], type=Path, help="file to upload to the input folder")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE", help="override an input")
    ap.add_argument("--out", type=Path, default=Path("movingbg_outputs"), help="where to download the outputs")
    ap.add_argument("--timeout", type=float, default=3600.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    client = ComfyClient(args.server)
    try:
        prompt = json.loads(args.workflow.read_text())
        for f in args.upload:
            logger.info("uploaded %s", client.upload(f))
        for spec in args.set:
            set_input(prompt, spec)
        prompt_id = client.queue(prompt)
        logger.info("queued %s", prompt_id)
        entry = client.wait(prompt_id, args.timeout)
        for info in output_files(entry):
            logger.info("saved %s", client.download(info, args.out))
    except (ComfyAPIError, ValueError, OSError) as exc:
        logger.error("error: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
