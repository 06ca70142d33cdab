"""Strict state-dict checks, model assembly from state dicts, and the single-file bundle format.

A bundle is ONE safetensors file holding ``MovingBGModel.state_dict()`` with the config JSON in its
metadata (``movingbg_config``), plus a human-readable sidecar ``<name>.json`` with the same config.
Loading is strict: any missing, unexpected or wrongly shaped key raises :class:`WeightLayoutError`
listing them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..io.atomic import FILE_MODE
from .config import MovingBGConfig
from .generator import MovingBGModel

logger = logging.getLogger(__name__)

__all__ = [
    "WeightLayoutError",
    "check_state_dict",
    "empty_model",
    "model_from_state_dict",
    "save_bundle",
    "load_bundle",
    "read_bundle_config",
    "BUNDLE_FORMAT",
]

BUNDLE_FORMAT = "movingbg.bundle/1"
_LIST_LIMIT = 40


def _fmt(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return f"[{shown}{', ...' if len(keys) > _LIST_LIMIT else ''}] ({len(keys)})"


class WeightLayoutError(ValueError):
    """A state dict does not match the expected layout.

    Attributes:
        what: which weights (for the message).
        missing: expected keys that are absent.
        unexpected: keys that have no place in the model.
        mismatched: ``(key, got_shape, expected_shape)``.
    """

    def __init__(self, what: str, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]], hint: str = "") -> None:
        self.what, self.missing, self.unexpected, self.mismatched = what, missing, unexpected, mismatched
        parts = [f"{what}: weights do not match the model layout."]
        if missing:
            parts.append(f"missing keys {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_fmt(unexpected)}")
        if mismatched:
            shown = [f"{k}: got {list(g)}, expected {list(e)}" for k, g, e in mismatched]
            parts.append(f"shape mismatches {_fmt(shown)}")
        if hint:
            parts.append(hint)
        super().__init__("\n".join(parts))


def check_state_dict(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]],
                     what: str, hint: str = "") -> None:
    """Raise :class:`WeightLayoutError` unless ``state`` has exactly the keys and shapes of ``expected``."""
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = sorted((k, tuple(v.shape), tuple(expected[k])) for k, v in state.items()
                        if k in expected and tuple(v.shape) != tuple(expected[k]))
    if missing or unexpected or mismatched:
        raise WeightLayoutError(what, missing, unexpected, mismatched, hint)


def empty_model(config: MovingBGConfig) -> MovingBGModel:
    """``MovingBGModel(config)`` on the ``meta`` device: no memory, no initialisation cost."""
    with torch.device("meta"):
        return MovingBGModel(config)


def model_from_state_dict(config: MovingBGConfig, state: Mapping[str, torch.Tensor], *,
                          dtype: torch.dtype | None = None, what: str = "MovingBG model") -> MovingBGModel:
    """Build a model whose parameters ARE the given tensors (strict; no random init).

    Args:
        config: architecture.
        state: full ``MovingBGModel`` state dict (``denoising_unet.*``, ``reference_unet.*`` ...).
        dtype: cast floating tensors to this dtype (default: keep).
        what: name used in error messages.
    """
    model = empty_model(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(state, expected, what)
    tensors, seen = {}, set()
    for key, value in state.items():
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        if value.data_ptr() in seen and value.numel() > 0:
            value = value.clone()  # never let two parameters share memory
        seen.add(value.data_ptr())
        tensors[key] = value
    model.load_state_dict(tensors, strict=True, assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
                if t.is_meta and n not in tensors]
    if leftover:
        raise RuntimeError(f"{what}: tensors left uninitialised: {leftover}")
    return model


def save_bundle(model: MovingBGModel, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` (``.safetensors``) plus the sidecar ``<stem>.json``.

    Returns:
        the safetensors path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config_json = model.config.to_json()
    metadata = {"format": BUNDLE_FORMAT, "movingbg_config": config_json}
    tmp = path.with_name(path.name + ".part")
    save_file(state, str(tmp), metadata=metadata)
    os.chmod(tmp, FILE_MODE)  # safetensors writes 0600; a model file is for every account that runs ComfyUI
    os.replace(tmp, path)
    sidecar = path.with_suffix(".json")
    tmp_json = sidecar.with_name(sidecar.name + ".part")
    tmp_json.write_text(model.config.to_json(indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_json, sidecar)
    logger.info("saved MovingBG bundle %s (%d tensors)", path, len(state))
    return path


def read_bundle_config(path: str | os.PathLike) -> MovingBGConfig:
    """Config of a bundle: from the safetensors metadata, else from the sidecar JSON."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    text = meta.get("movingbg_config")
    sidecar = path.with_suffix(".json")
    if text is None:
        if not sidecar.is_file():
            raise ValueError(f"{path} has no movingbg_config metadata and no sidecar {sidecar.name}")
        text = sidecar.read_text(encoding="utf-8")
    elif sidecar.is_file() and json.loads(sidecar.read_text(encoding="utf-8")) != json.loads(text):
        logger.warning("%s differs from the config stored in %s; using the stored one", sidecar.name, path.name)
    return MovingBGConfig.from_json(text)


def load_bundle(path: str | os.PathLike, *, device: torch.device | str = "cpu",
                dtype: torch.dtype | None = None) -> MovingBGModel:
    """Load a bundle written by :func:`save_bundle` (strict).

    Raises:
        WeightLayoutError: keys or shapes differ from the stored config's model.
    """
    path = Path(path)
    config = read_bundle_config(path)
    state = {}
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        for key in f.keys():
            state[key] = f.get_tensor(key)
    return model_from_state_dict(config, state, dtype=dtype, what=f"bundle {path.name}")
