"""Conversions at the ComfyUI boundary and progress/interrupt binding.

ComfyUI layouts: IMAGE ``[B, H, W, C]`` float 0..1, MASK ``[B, H, W]`` float 0..1.
The core works on numpy ``(T, H, W, 3)`` uint8 frames and ``(T, H, W)`` float32 mattes.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

import comfy.model_management
import comfy.utils

logger = logging.getLogger(__name__)


def image_to_frames(image: torch.Tensor, name: str = "images") -> np.ndarray:
    """ComfyUI IMAGE ``[B, H, W, C]`` 0..1 -> ``(B, H, W, 3)`` uint8 (alpha dropped, grey expanded)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"'{name}' must be an IMAGE batch [B, H, W, 3], got {shape}")
    if image.shape[0] == 0:
        raise ValueError(f"'{name}' is an empty batch (0 frames)")
    x = image[..., :3] if image.shape[-1] != 1 else image.expand(-1, -1, -1, 3)
    return (x.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def frames_to_image(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ComfyUI IMAGE float32 0..1 on the intermediate device."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0)
    return t.to(comfy.model_management.intermediate_device())


def mask_to_alpha(mask: torch.Tensor, name: str = "mask") -> np.ndarray:
    """ComfyUI MASK ``[B, H, W]`` (or ``[H, W]``) -> ``(B, H, W)`` float32 0..1."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"'{name}' must be a MASK [B, H, W], got {shape}")
    if mask.ndim == 2:
        mask = mask[None]
    return mask.detach().float().clamp(0, 1).cpu().numpy()


def alpha_to_mask(alpha: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32)).to(
        comfy.model_management.intermediate_device())


def check_same_frames(frames: np.ndarray, alpha: np.ndarray, frames_name: str = "images",
                      mask_name: str = "mask") -> None:
    if alpha.shape[0] != frames.shape[0] and alpha.shape[0] != 1:
        raise ValueError(f"'{mask_name}' has {alpha.shape[0]} frames but '{frames_name}' has {frames.shape[0]}; "
                         "they must come from the same clip")
    if alpha.shape[1:] != frames.shape[1:3]:
        raise ValueError(f"'{mask_name}' is {alpha.shape[2]}x{alpha.shape[1]} but '{frames_name}' is "
                         f"{frames.shape[2]}x{frames.shape[1]} (WxH); resize one to match the other")


def interrupt_check() -> Callable[[], None]:
    """Raise ComfyUI's interruption exception when the user pressed cancel."""
    return comfy.model_management.throw_exception_if_processing_interrupted


def progress(total: int) -> Callable[..., None]:
    """A callable advancing a ComfyUI progress bar by one step per call."""
    bar = comfy.utils.ProgressBar(max(1, int(total)))

    def step(*_args, **_kwargs) -> None:
        bar.update(1)

    return step


def progress_and_interrupt(total: int) -> Callable[..., None]:
    """Per-item callback: checks for cancel, then advances the progress bar."""
    step, check = progress(total), interrupt_check()

    def on_item(*args, **kwargs) -> None:
        check()
        step(*args, **kwargs)

    return on_item


def optional(value, default=None):
    return default if value is None else value


def warn(message: str) -> None:
    logger.warning("MovingBG: %s", message)
