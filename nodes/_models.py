"""Weight lookup and model caching at the ComfyUI boundary.

Torch modules are wrapped in ``comfy.model_patcher.ModelPatcher`` and brought to the compute device
with ``comfy.model_management.load_models_gpu`` right before use; ComfyUI offloads them when it needs
the memory. ONNX sessions (pose, matte) live outside torch and are cached by file path.
:class:`PatchedWeights` reads a user's MODEL with its LoRAs applied without modifying it.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Iterator
from typing import Callable

import torch

import comfy.lora
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


def hosted_module(patcher: "comfy.model_patcher.ModelPatcher", name: str = "movingbg_model") -> torch.nn.Module:
    """Our module inside a patcher made by :func:`hosted_patcher`, where it is (not loaded anywhere)."""
    hosted = getattr(patcher, "model", None)
    if not isinstance(hosted, Hosted):
        raise ValueError(f"'{name}' must come from a MovingBG loader, got {type(patcher).__name__}")
    return hosted.module


def hosted_patcher(module: torch.nn.Module) -> "comfy.model_patcher.ModelPatcher":
    """A ModelPatcher around ``module`` (on the CPU; ``load_models_gpu`` moves it when needed)."""
    module.eval()
    return comfy.model_patcher.ModelPatcher(Hosted(module), load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def torch_patcher(key: tuple, build: Callable[[], torch.nn.Module]) -> "comfy.model_patcher.ModelPatcher":
    """A cached ModelPatcher around the module ``build()`` returns (built on the CPU)."""
    return cached(key, lambda: hosted_patcher(build()))


class PatchedWeights:
    """The weights of a ComfyUI MODEL (a ModelPatcher) with its weight patches (LoRAs ...) applied.

    Computed one tensor at a time, in fp32 on the CPU, with ComfyUI's own ``calculate_weight``, from the
    ORIGINAL weights: while ComfyUI holds the MODEL (or a clone of it) loaded, its patches are merged into
    the module in place and the originals sit in the patcher's ``backup`` (shared by all clones). The MODEL
    is only read -- nothing is unloaded, patched or unpatched. (``ModelPatcher.get_key_patches`` is not
    used: in March-2024 ComfyUI it unloads loaded clones and, for a clone with the same patches, leaves
    the patched weights in the module without tracking them.) Works with the March-2024 and current
    ModelPatcher (backup entries as tensors or ``(weight, inplace_update)``, hook backups, convert
    functions of quantised weights).

    Args:
        patcher: the MODEL.
        prefix: which weights (``diffusion_model.`` = the U-Net); keys are returned without it.
    """

    def __init__(self, patcher, prefix: str = "diffusion_model.") -> None:
        self.patcher, self.prefix = patcher, prefix
        self._current = patcher.model_state_dict(prefix)
        calc = getattr(comfy.lora, "calculate_weight", None)  # current ComfyUI
        self._calculate = calc if calc is not None else patcher.calculate_weight  # March 2024
        self._key_weight = getattr(comfy.model_patcher, "get_key_weight", None)  # current: convert functions
        if getattr(patcher, "hook_patches", None):
            logger.warning("MovingBG: the MODEL's hook patches (scheduled LoRAs) are not applied, only its "
                           "regular weight patches")

    def _original(self, key: str) -> torch.Tensor:
        hook = (getattr(self.patcher, "hook_backup", None) or {}).get(key)
        if hook is not None:
            return hook[0]
        backup = (getattr(self.patcher, "backup", None) or {}).get(key)
        if backup is not None:
            return getattr(backup, "weight", backup)
        return self._current[key]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Key (without the prefix) -> shape, without computing anything."""
        return {k[len(self.prefix):]: tuple(self._original(k).shape) for k in self._current}

    def num_patched(self) -> int:
        return sum(1 for k in self._current if self.patcher.patches.get(k))

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(key without the prefix, patched fp32 CPU tensor)``, one at a time."""
        for key in self._current:
            weight = self._original(key).detach().to(device="cpu", dtype=torch.float32, copy=True)
            if self._key_weight is not None:
                convert = self._key_weight(self.patcher.model, key)[2]
                if convert is not None:
                    weight = convert(weight, inplace=True)
            patches = self.patcher.patches.get(key)
            if patches:
                weight = self._calculate(patches, weight, key)
            yield key[len(self.prefix):], weight


def load_to_device(patcher: "comfy.model_patcher.ModelPatcher"):
    """``load_models_gpu`` then return (our module, device) ready for inference."""
    mm.load_models_gpu([patcher])
    return hosted_module(patcher), patcher.load_device


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
