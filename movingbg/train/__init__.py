"""Training MovingBG (``python -m movingbg.train``) and exporting checkpoints as bundles.

The config, data pipeline and export need no extra packages; the trainer needs HF ``accelerate``
(``pip install 'movingbg[train]'``), imported only when a :class:`Trainer` is built.
"""

from __future__ import annotations

from typing import Any

from .config import MAX_CLIP_LENGTH, TrainConfig, load_config

__all__ = ["MAX_CLIP_LENGTH", "TrainConfig", "load_config", "Trainer", "TrainResult", "export_checkpoint"]


def __getattr__(name: str) -> Any:
    if name in ("Trainer", "TrainResult"):
        from . import trainer

        return getattr(trainer, name)
    if name == "export_checkpoint":
        from .export import export_checkpoint

        return export_checkpoint
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
