"""Background point tracking with CoTracker3 (offline): weight loading and a numpy front end.

:func:`track_points` follows the conventions of the official offline predictor: frames are
resized bilinearly (``align_corners=True``) to the model resolution 384 x 512, query positions
are scaled by ``(511 / (W - 1), 383 / (H - 1))``, a 6 x 6 grid of support queries on frame 0 is
appended (and dropped from the result), the network runs 6 refinement iterations, a point is
visible where the predicted visibility exceeds 0.9, and every track is pinned to its query point
(and marked visible) on its query frame.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..models.cotracker3 import CoTracker3Offline
from ..weights import WeightSpec, check_state_dict_keys, read_state_dict

logger = logging.getLogger(__name__)

__all__ = ["COTRACKER3_OFFLINE", "load_cotracker3", "track_points", "VISIBILITY_THRESHOLD",
           "MODEL_RESOLUTION"]

COTRACKER3_OFFLINE = WeightSpec(
    filename="scaled_offline.pth",
    urls=("https://huggingface.co/facebook/cotracker3/resolve/main/scaled_offline.pth",),
    # Git LFS object id of scaled_offline.pth in huggingface.co/facebook/cotracker3
    # (101,890,938 bytes).
    sha256="2670d4562ed69326dda775a26e54883925cd11b6fc9b24cb7aa9f8078bce7834",
    description="CoTracker3 offline",
)

MODEL_RESOLUTION = (384, 512)
"""``(H, W)`` the frames are resized to."""

VISIBILITY_THRESHOLD = 0.9
"""A point is reported visible where the predicted visibility probability exceeds this."""



# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def load_cotracker3(path: os.PathLike | str) -> CoTracker3Offline:
    """Build :class:`CoTracker3Offline` and load a checkpoint strictly.

    Args:
        path: ``.pth`` / ``.pt`` (plain state dict, or one wrapped under ``"model"`` or
            ``"state_dict"``; loaded with ``weights_only=True``) or ``.safetensors``.

    Returns:
        The model on the CPU in eval mode.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a state dict, or its names / shapes differ from the network's;
            the message names the file and lists missing and unexpected keys and shape mismatches.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CoTracker3 weights not found: {path}")
    sd = read_state_dict(path)
    model = CoTracker3Offline()
    check_state_dict_keys(path.name, sd, {k: tuple(v.shape) for k, v in model.state_dict().items()},
                          "CoTracker3 offline network")
    model.load_state_dict(sd, strict=True)
    model.eval()
    logger.info("Loaded CoTracker3 offline weights from %s", path)
    return model


# --------------------------------------------------------------------------------------------
# Tracking
# --------------------------------------------------------------------------------------------

def _support_grid(size: int, height: int, width: int) -> np.ndarray:
    """``(size*size, 2)`` ``(x, y)`` grid over a ``height`` x ``width`` frame, row-major.

    The grid leaves a margin of ``width / 64`` on every side (a single point sits at the centre).
    """
    if size == 1:
        return np.array([[width / 2.0, height / 2.0]], dtype=np.float64)
    margin = width / 64.0
    ys = np.linspace(margin, height - margin, size)
    xs = np.linspace(margin, width - margin, size)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([gx, gy], axis=-1).reshape(-1, 2)


def _validate(video: object, queries: object, iters: object, support_grid: object,
              dtype: object) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(video, np.ndarray):
        raise ValueError(f"video must be a numpy array, got {type(video).__name__}")
    if video.dtype != np.uint8:
        raise ValueError(f"video must be uint8, got {video.dtype}")
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be (T, H, W, 3), got shape {video.shape}")
    t, h, w, _ = video.shape
    if t < 1 or h < 2 or w < 2:
        raise ValueError(f"video needs at least 1 frame of at least 2x2 pixels, got shape {video.shape}")

    try:
        q = np.asarray(queries, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"queries must be a numeric (N, 3) array of [t, x, y]: {exc}") from exc
    if q.ndim != 2 or q.shape[1] != 3 or q.shape[0] < 1:
        raise ValueError(f"queries must be (N, 3) [t, x, y] with N >= 1, got shape {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError("queries contain NaN or infinite values")
    frames = q[:, 0]
    if np.any(frames != np.round(frames)):
        raise ValueError("queries[:, 0] (frame index t) must hold whole numbers")
    if frames.min() < 0 or frames.max() > t - 1:
        raise ValueError(f"queries[:, 0] (frame index t) must lie in [0, {t - 1}], "
                         f"got values from {frames.min():g} to {frames.max():g}")

    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise ValueError(f"iters must be a positive integer, got {iters!r}")
    if isinstance(support_grid, bool) or not isinstance(support_grid, (int, np.integer)) or support_grid < 0:
        raise ValueError(f"support_grid must be a non-negative integer, got {support_grid!r}")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype!r}")
    return video, q


def _resize_clip(video: np.ndarray, device: torch.device, chunk: int = 16) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(1, T, 3, 384, 512)`` float32 0..255 on ``device``."""
    t = video.shape[0]
    out = torch.empty((1, t, 3) + MODEL_RESOLUTION, dtype=torch.float32, device=device)
    for s in range(0, t, chunk):
        frames = torch.from_numpy(np.ascontiguousarray(video[s:s + chunk])).to(device)
        frames = frames.permute(0, 3, 1, 2).float()
        out[0, s:s + chunk] = F.interpolate(frames, MODEL_RESOLUTION, mode="bilinear", align_corners=True)
    return out


def track_points(model: CoTracker3Offline, video: np.ndarray, queries: np.ndarray, *, iters: int = 6,
                 support_grid: int = 6, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32,
                 check_interrupt: Optional[Callable[[], None]] = None) -> tuple[np.ndarray, np.ndarray]:
    """Track query points through a clip with the offline CoTracker3 model.

    Args:
        model: network from :func:`load_cotracker3`; it is moved to ``device`` and put in eval mode.
        video: ``(T, H, W, 3)`` uint8 RGB.
        queries: ``(N, 3)`` float ``[t, x, y]``: query frame index (whole number in ``[0, T-1]``)
            and position in pixels of the original frame (pixel centres at integers).
        iters: refinement iterations (6 as in the official predictor).
        support_grid: side of the grid of extra queries on frame 0 that are tracked jointly to
            give the model context (6 officially; 0 disables). They are not returned.
        device: where the network runs.
        dtype: ``torch.float32``, or ``torch.float16`` / ``torch.bfloat16`` to run under autocast
            (meant for GPUs; on CPUs without native bf16/fp16 it is much slower).
        check_interrupt: called between refinement iterations (and CNN chunks); raise to abort.

    Returns:
        ``tracks`` ``(T, N, 2)`` float32 ``(x, y)`` in pixels of the original frames and
        ``visible`` ``(T, N)`` bool. On its query frame a track equals its query point and is
        visible.

    Raises:
        ValueError: an argument is malformed; the message names it.
    """
    video, q = _validate(video, queries, iters, support_grid, dtype)
    t, h, w, _ = video.shape
    n = q.shape[0]
    dev = torch.device(device)
    mh, mw = MODEL_RESOLUTION

    model_q = q.copy()
    model_q[:, 1] *= (mw - 1) / (w - 1)
    model_q[:, 2] *= (mh - 1) / (h - 1)
    if support_grid > 0:
        grid = _support_grid(int(support_grid), mh, mw)
        model_q = np.concatenate([model_q, np.concatenate([np.zeros((len(grid), 1)), grid], axis=1)])

    if dtype != torch.float32 and dev.type == "cpu":
        logger.warning("CoTracker3: %s autocast on the CPU can be far slower than float32 on CPUs "
                       "without native support for it", dtype)
    model.to(dev).eval()
    clip = _resize_clip(video, dev)
    q_t = torch.from_numpy(model_q).to(device=dev, dtype=torch.float32)[None]
    logger.debug("CoTracker3: %d frames %dx%d, %d queries (+%d support), %d iterations on %s",
                 t, w, h, n, model_q.shape[0] - n, iters, dev)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
        coords, vis, _conf = model(clip, q_t, iters=int(iters), check_interrupt=check_interrupt)
    del clip

    tracks = coords[0, :, :n].float().cpu().numpy().astype(np.float64)         # (T, N, 2)
    visible = (vis[0, :, :n].float() > VISIBILITY_THRESHOLD).cpu().numpy()     # (T, N)
    tracks[..., 0] *= (w - 1) / (mw - 1)
    tracks[..., 1] *= (h - 1) / (mh - 1)
    frames = q[:, 0].astype(np.int64)
    idx = np.arange(n)
    tracks[frames, idx] = q[:, 1:3]
    visible[frames, idx] = True
    return tracks.astype(np.float32), visible.astype(bool)
