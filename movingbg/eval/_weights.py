"""Where the evaluation networks' weights are looked for and downloaded to.

The backbones of LPIPS (torchvision's AlexNet / VGG16) and FVD (I3D) are not shipped; they are
downloaded on first use with a SHA-256 check (:func:`movingbg.weights.ensure_weight`).

* Download folder: ``$MOVINGBG_EVAL_WEIGHTS`` or ``~/.cache/movingbg/eval``.
* Also searched: PyTorch's hub cache (``$TORCH_HOME/hub/checkpoints``, default
  ``~/.cache/torch/hub/checkpoints``), where torchvision keeps ``alexnet-owt-7be5be79.pth`` and
  ``vgg16-397923af.pth`` under the same file names.
* ``MOVINGBG_OFFLINE=1`` (or ``true``/``yes``) disables downloads: missing weights then make the
  metric report "skipped: weights unavailable (...)" at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["default_download_dir", "default_search_dirs", "downloads_allowed", "resolve_dirs"]


def default_download_dir() -> Path:
    """``$MOVINGBG_EVAL_WEIGHTS`` or ``~/.cache/movingbg/eval``."""
    env = os.environ.get("MOVINGBG_EVAL_WEIGHTS", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "movingbg" / "eval"


def _torch_hub_checkpoints() -> Path:
    home = os.environ.get("TORCH_HOME", "").strip()
    base = Path(home).expanduser() if home else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"
    return base / "hub" / "checkpoints"


def default_search_dirs() -> list[Path]:
    """The download folder, then PyTorch's hub cache."""
    return [default_download_dir(), _torch_hub_checkpoints()]


def downloads_allowed() -> bool:
    """False when ``MOVINGBG_OFFLINE`` is 1/true/yes."""
    return os.environ.get("MOVINGBG_OFFLINE", "").strip().lower() not in ("1", "true", "yes")


def resolve_dirs(
    search_dirs: Optional[Sequence[os.PathLike | str]],
    download_dir: Optional[os.PathLike | str],
    allow_download: Optional[bool],
) -> tuple[list[Path], Path, bool]:
    """Fill in the defaults; the download folder is always searched first."""
    dl = Path(download_dir) if download_dir is not None else default_download_dir()
    dirs = [Path(d) for d in search_dirs] if search_dirs is not None else default_search_dirs()
    if dl not in dirs:
        dirs.insert(0, dl)
    return dirs, dl, downloads_allowed() if allow_download is None else bool(allow_download)
