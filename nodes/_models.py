"""Weight lookup and model caching at the ComfyUI boundary.

Torch modules are wrapped in ``comfy.model_patcher.ModelPatcher`` and brought to the compute device
with ``comfy.model_management.load_models_gpu`` right before use; ComfyUI offloads them when it needs
the memory. ONNX sessions (pose, matte) live outside torch and are cached by file path.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Callable

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils

from ..movingbg.weights import WeightSpec, ensure_weight
from . import paths

logger = logging.getLogger(__name__)

_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_CACHE_SIZE = 4


def cached(key: tuple, build: Callable[[], object]) -> object:
    """Small LRU of loaded models keyed by (kind, file, device...)."""
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = build()
    _CACHE[key] = value
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def downloads_allowed() -> bool:
    """False when ``MOVINGBG_OFFLINE`` is set (1/true/yes): missing weights then fail at once."""
    return os.environ.get("MOVINGBG_OFFLINE", "").strip().lower() not in ("1", "true", "yes")


def weight_path(spec: WeightSpec, folder: str, allow_download: bool | None = None) -> str:
    """Find ``spec`` in the registered folders for ``folder``, else download it there (progress bar)."""
    if allow_download is None:
        allow_download = downloads_allowed()
    state = {"bar": None}

    def on_bytes(done: int, total) -> None:
        if total:
            if state["bar"] is None:
                state["bar"] = comfy.utils.ProgressBar(total)
            state["bar"].update_absolute(done, total)

    return str(ensure_weight(spec, paths.search_dirs(folder), paths.download_dir(folder),
                             allow_download=allow_download, progress=on_bytes))


class Hosted(torch.nn.Module):
    """What ComfyUI's ModelPatcher holds: our module as a child, so the patcher may set its own
    bookkeeping attributes (``device``, ``model_loaded_weight_memory``...) without touching ours."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module


def torch_patcher(key: tuple, build: Callable[[], torch.nn.Module]) -> "comfy.model_patcher.ModelPatcher":
    """A cached ModelPatcher around the module ``build()`` returns (built on the CPU)."""
    def make():
        module = build()
        module.eval()
        return comfy.model_patcher.ModelPatcher(Hosted(module), load_device=mm.get_torch_device(),
                                                offload_device=mm.unet_offload_device())

    return cached(key, make)


def load_to_device(patcher: "comfy.model_patcher.ModelPatcher"):
    """``load_models_gpu`` then return (our module, device) ready for inference."""
    mm.load_models_gpu([patcher])
    return patcher.model.module, patcher.load_device


def onnx_device() -> str:
    """'cuda' when ComfyUI computes on CUDA and onnxruntime has the CUDA provider, else 'cpu'."""
    try:
        import onnxruntime as ort

        dev = mm.get_torch_device()
        if getattr(dev, "type", "cpu") == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            return "cuda"
    except Exception:  # any import/provider problem: the CPU always works
        pass
    return "cpu"
