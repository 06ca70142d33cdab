"""Model folders under ``models/movingbg/<role>``, registered with ComfyUI's folder_paths.

Users' ``extra_model_paths.yaml`` entries with the same names (``movingbg``, ``movingbg_pose``,
``movingbg_tracker``, ``movingbg_matte``) are kept: our default folder is appended, never replacing.
"""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ..movingbg.assets import MODEL_DIRS as SHIPPED_MODEL_DIRS

FOLDERS = {
    "movingbg": ("", {".safetensors", ".json"}),
    "movingbg_pose": ("pose", {".onnx"}),
    "movingbg_tracker": ("tracker", {".pth", ".pt", ".safetensors"}),
    "movingbg_matte": ("matte", {".onnx"}),
}
# AnimateDiff motion modules live where AnimateDiff-Evolved keeps them: models/animatediff_models
SHARED_FOLDERS = {"animatediff_models": {".ckpt", ".pt", ".pth", ".safetensors"}}


def register_model_folders() -> None:
    for name, exts in SHARED_FOLDERS.items():
        default = os.path.join(folder_paths.models_dir, name)
        entry = folder_paths.folder_names_and_paths.get(name)
        if entry is None:
            folder_paths.folder_names_and_paths[name] = ([default], set(exts))
        elif isinstance(entry[1], set):
            entry[1].update(exts)
    for name, (sub, exts) in FOLDERS.items():
        default = os.path.join(folder_paths.models_dir, "movingbg", sub) if sub else os.path.join(
            folder_paths.models_dir, "movingbg")
        entry = folder_paths.folder_names_and_paths.get(name)
        if entry is None:
            folder_paths.folder_names_and_paths[name] = ([default], set(exts))
            continue
        paths, known = entry[0], entry[1]
        if default not in paths:
            paths.append(default)
        if isinstance(known, set):
            known.update(exts)
        else:  # some versions store a list or tuple
            folder_paths.folder_names_and_paths[name] = (paths, set(known) | set(exts))


def register_shipped_models() -> None:
    """Make the miniature model shipped in ``movingbg/assets/models`` visible to MovingBG Load Model and the
    stock Load VAE node (appended after the user's folders, so a user's file of the same name wins)."""
    for name, folder in SHIPPED_MODEL_DIRS.items():
        if not folder.is_dir():
            continue
        entry = folder_paths.folder_names_and_paths.get(name)
        if entry is None:
            continue
        if str(folder) not in entry[0]:
            entry[0].append(str(folder))


def search_dirs(name: str) -> list[Path]:
    """All folders registered for ``name`` (user folders first, then ours)."""
    return [Path(p) for p in folder_paths.get_folder_paths(name)]


def download_dir(name: str) -> Path:
    """Where downloads for ``name`` go: our default folder under ComfyUI's models directory."""
    sub = FOLDERS[name][0]
    return Path(folder_paths.models_dir) / "movingbg" / sub if sub else Path(folder_paths.models_dir) / "movingbg"
