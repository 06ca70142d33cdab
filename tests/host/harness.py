"""Run our nodes inside a real ComfyUI, in this process: ComfyUI's own prompt validation and executor.

One ComfyUI per process. Works with the pinned March-2024 ComfyUI and with current ComfyUI (v0.3.6x):
the differences (async validate_prompt / load_custom_node, history_result vs outputs_ui) are bridged here.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from movingbg.host import ensure_comfyui, link_pack



class _Server:
    """The little of PromptServer that PromptExecutor talks to."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.messages = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


def _run(value):
    return asyncio.run(value) if inspect.isawaitable(value) else value


@dataclass
class Result:
    ok: bool
    outputs: dict = field(default_factory=dict)  # node id -> ui dict
    messages: list = field(default_factory=list)
    error: object = None


class Host:
    """A real ComfyUI loaded in-process with our pack registered."""

    def __init__(self, workdir: Path):
        self.root = ensure_comfyui()
        self.workdir = Path(workdir)
        if str(self.root) not in sys.path:
            sys.path.insert(0, str(self.root))
        import comfy.options

        comfy.options.enable_args_parsing(False)
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
        try:  # current ComfyUI: its top-level utils package must be imported before nodes
            importlib.import_module("utils.json_util")
        except ImportError:
            pass
        import folder_paths

        self.folder_paths = folder_paths
        for sub in ("input", "output", "temp", "models"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        folder_paths.set_input_directory(str(self.workdir / "input"))
        folder_paths.set_output_directory(str(self.workdir / "output"))
        folder_paths.set_temp_directory(str(self.workdir / "temp"))
        folder_paths.models_dir = str(self.workdir / "models")
        import comfy.model_management  # noqa: F401  (after args.cpu)
        import execution
        import nodes

        self.nodes, self.execution = nodes, execution
        for extra in ("nodes_mask.py",):  # stock comfy_extras nodes our workflows use (MaskToImage)
            _run(nodes.load_custom_node(str(self.root / "comfy_extras" / extra)))
        link = link_pack(self.workdir / "custom_nodes")
        before = set(nodes.NODE_CLASS_MAPPINGS)
        loaded = _run(nodes.load_custom_node(str(link)))
        if not loaded:
            raise RuntimeError("ComfyUI failed to load the MovingBG pack (see the log above)")
        self.pack_nodes = sorted(set(nodes.NODE_CLASS_MAPPINGS) - before)
        self.server = _Server()
        self.executor = execution.PromptExecutor(self.server)

    @property
    def input_dir(self) -> Path:
        return Path(self.folder_paths.get_input_directory())

    @property
    def output_dir(self) -> Path:
        return Path(self.folder_paths.get_output_directory())

    def validate(self, prompt: dict):
        fn = self.execution.validate_prompt
        params = list(inspect.signature(fn).parameters)
        if len(params) >= 3:  # new: (prompt_id, prompt, partial_execution_list)
            return _run(fn(str(uuid.uuid4()), prompt, None))
        return _run(fn(prompt))

    def run(self, prompt: dict) -> Result:
        """Validate and execute an API-format prompt; ``Result.ok`` False carries the errors."""
        valid = self.validate(prompt)
        if not valid[0]:
            return Result(False, error={"error": valid[1], "node_errors": valid[3]})
        self.server.messages.clear()
        prompt_id = str(uuid.uuid4())
        self.executor.execute(prompt, prompt_id, {"client_id": None}, valid[2])
        history = getattr(self.executor, "history_result", None)
        outputs = history["outputs"] if history else dict(getattr(self.executor, "outputs_ui", {}))
        errors = [m for m in self.executor.status_messages if m[0] in ("execution_error", "execution_interrupted")]
        return Result(bool(self.executor.success), outputs, list(self.executor.status_messages),
                      errors[0][1] if errors else None)

    def node_output(self, node_id: str, slot: int = 0):
        """The Python value a node returned on output ``slot`` in the last ``run`` (executor cache)."""
        cache = getattr(self.executor, "outputs", None)
        if isinstance(cache, dict):  # March-2024 executor: {node_id: [[value per batch] per slot]}
            value = cache.get(node_id)
        else:  # current executor: caches.outputs.get(node_id) -> entry with .outputs
            value = self.executor.caches.outputs.get(node_id)
            value = getattr(value, "outputs", value)
        if value is None:
            raise KeyError(f"node {node_id} has no cached output")
        return value[slot][0]
