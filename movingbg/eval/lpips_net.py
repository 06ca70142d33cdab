"""LPIPS (Zhang et al., 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), version 0.1, written for MovingBG and loading the official weights strictly.

Network: input in ``[-1, 1]`` is shifted/scaled per channel (the LPIPS "scaling layer"), passed
through torchvision's ImageNet AlexNet or VGG16 ``features`` and tapped after five ReLUs; each tap
is unit-normalised along channels, the squared difference of the two images' taps is weighted by a
learned non-negative 1 x 1 convolution (the "linear head", no bias), averaged over space, and the
five layers are summed. No resizing is done (as in the official implementation).

Weights (downloaded on first use, verified by SHA-256; see :mod:`movingbg.eval._weights`):

* backbone: torchvision's ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth`` (only the
  ``features.*`` tensors are used; the ``classifier.*`` ones are expected and ignored);
* linear heads: ``lpips/weights/v0.1/{alex,vgg}.pth`` of richzhang/PerceptualSimilarity
  (BSD-2-Clause; the same files ship in the ``lpips`` 0.1.4 wheel, which is used when installed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..weights import (WeightSpec, WeightsNotFoundError, check_state_dict_keys, ensure_weight, find_weight,
                       read_state_dict)
from ._weights import resolve_dirs

logger = logging.getLogger(__name__)

__all__ = [
    "LPIPS",
    "LPIPS_NETS",
    "LPIPS_BACKBONES",
    "LPIPS_HEADS",
    "load_lpips",
    "lpips_frames",
]

LPIPS_BACKBONES: dict[str, WeightSpec] = {
    "alex": WeightSpec(
        filename="alexnet-owt-7be5be79.pth",
        urls=("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",),
        # torchvision AlexNet_Weights.IMAGENET1K_V1 (244,408,911 bytes; its name carries the first
        # 8 hex digits of this SHA-256)
        sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
        description="torchvision ImageNet AlexNet (LPIPS backbone)",
    ),
    "vgg": WeightSpec(
        filename="vgg16-397923af.pth",
        urls=("https://download.pytorch.org/models/vgg16-397923af.pth",),
        # torchvision VGG16_Weights.IMAGENET1K_V1 (553,433,881 bytes)
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        description="torchvision ImageNet VGG16 (LPIPS backbone)",
    ),
}
"""torchvision ImageNet backbones, by LPIPS net name."""

_HEADS_REPO = "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/"

LPIPS_HEADS: dict[str, WeightSpec] = {
    "alex": WeightSpec(
        filename="lpips_v0.1_alex.pth",
        urls=(_HEADS_REPO + "alex.pth",),
        # same bytes in the lpips 0.1.4 wheel (lpips/weights/v0.1/alex.pth, 6,009 bytes)
        sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
        description="LPIPS v0.1 linear heads for AlexNet",
    ),
    "vgg": WeightSpec(
        filename="lpips_v0.1_vgg.pth",
        urls=(_HEADS_REPO + "vgg.pth",),
        # same bytes in the lpips 0.1.4 wheel (lpips/weights/v0.1/vgg.pth, 7,289 bytes)
        sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
        description="LPIPS v0.1 linear heads for VGG16",
    ),
}
"""LPIPS v0.1 linear heads, by LPIPS net name."""

# torchvision ``features`` layouts: ("C", in, out, kernel, stride, padding) | ("R",) | ("M", kernel, stride)
_LAYOUTS: dict[str, tuple[tuple, ...]] = {
    "alex": (
        ("C", 3, 64, 11, 4, 2), ("R",), ("M", 3, 2),
        ("C", 64, 192, 5, 1, 2), ("R",), ("M", 3, 2),
        ("C", 192, 384, 3, 1, 1), ("R",),
        ("C", 384, 256, 3, 1, 1), ("R",),
        ("C", 256, 256, 3, 1, 1), ("R",),
    ),
    "vgg": tuple(
        layer
        for block, (cin, cout, n) in enumerate(((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)))
        for layer in ((("M", 2, 2),) if block else ())
        + tuple(item for i in range(n) for item in (("C", cin if i == 0 else cout, cout, 3, 1, 1), ("R",)))
    ),
}
# index (in ``features``) of the ReLU after which each of the five LPIPS taps is taken
_TAPS: dict[str, tuple[int, ...]] = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
_CHANNELS: dict[str, tuple[int, ...]] = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}

LPIPS_NETS = tuple(_LAYOUTS)
"""Supported backbones: ``"alex"`` (the LPIPS default) and ``"vgg"``."""

# LPIPS scaling layer (ImageNet normalisation expressed for inputs in [-1, 1])
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10


class _Head(nn.Module):
    """Learned per-channel weights of one tap: ``model.1`` is a 1 x 1 conv C -> 1 without bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(p=0.5), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance network.

    State dict keys: ``features.<i>.{weight,bias}`` (torchvision's layout) and
    ``lin<k>.model.1.weight`` ``(1, C_k, 1, 1)`` for the five taps.

    Args:
        net: ``"alex"`` or ``"vgg"``.
    """

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in _LAYOUTS:
            raise ValueError(f"net must be one of {LPIPS_NETS}, got {net!r}")
        self.net = net
        layers: list[nn.Module] = []
        for spec in _LAYOUTS[net]:
            if spec[0] == "C":
                _, cin, cout, k, s, p = spec
                layers.append(nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=p))
            elif spec[0] == "R":
                layers.append(nn.ReLU(inplace=False))
            else:
                layers.append(nn.MaxPool2d(kernel_size=spec[1], stride=spec[2]))
        self.features = nn.Sequential(*layers)
        self.taps = _TAPS[net]
        for k, c in enumerate(_CHANNELS[net]):
            self.add_module(f"lin{k}", _Head(c))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, want = [], set(self.taps)
        x = (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in want:
                out.append(x)
            if i == self.taps[-1]:
                break
        return out

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Distance between image batches.

        Args:
            x0, x1: ``(B, 3, H, W)`` float RGB in ``[-1, 1]`` (same shape).

        Returns:
            ``(B,)`` LPIPS distances (>= 0 with the official non-negative heads; 0 for identical
            inputs).
        """
        if x0.shape != x1.shape or x0.ndim != 4 or x0.shape[1] != 3:
            raise ValueError(f"x0 and x1 must both be (B, 3, H, W), got {tuple(x0.shape)} and {tuple(x1.shape)}")
        f0, f1 = self._taps(x0), self._taps(x1)
        total = x0.new_zeros(x0.shape[0])
        for k, (a, b) in enumerate(zip(f0, f1)):
            a = a / (torch.sqrt(torch.sum(a * a, dim=1, keepdim=True)) + _EPS)
            b = b / (torch.sqrt(torch.sum(b * b, dim=1, keepdim=True)) + _EPS)
            total = total + getattr(self, f"lin{k}")((a - b) ** 2).mean(dim=(1, 2, 3))
        return total

    # ----------------------------------------------------------------------------------------
    # loading

    def backbone_keys(self) -> dict[str, tuple[int, ...]]:
        """Expected ``features.*`` tensor names and shapes (torchvision's)."""
        return {k: tuple(v.shape) for k, v in self.state_dict().items() if k.startswith("features.")}

    def head_keys(self) -> dict[str, tuple[int, ...]]:
        """Expected ``lin*`` tensor names and shapes (the official v0.1 head files')."""
        return {k: tuple(v.shape) for k, v in self.state_dict().items() if k.startswith("lin")}

    def load_weights(self, backbone: os.PathLike | str, heads: os.PathLike | str) -> "LPIPS":
        """Load a torchvision backbone file and an LPIPS head file strictly.

        Raises:
            FileNotFoundError: a file does not exist.
            ValueError: a file is not a state dict, or its names/shapes differ from the network's
                (the message names the file and lists missing/unexpected keys and shape mismatches).
        """
        sd_b = read_state_dict(backbone, wrappers=("state_dict",))
        feats = {k: v for k, v in sd_b.items() if k.startswith("features.")}
        extra = [k for k in sd_b if not k.startswith(("features.", "classifier."))]
        check_state_dict_keys(Path(backbone).name, feats, self.backbone_keys(), f"torchvision {self.net} backbone",
                              extra=extra)
        sd_h = read_state_dict(heads, wrappers=("state_dict",))
        check_state_dict_keys(Path(heads).name, sd_h, self.head_keys(), f"LPIPS v0.1 {self.net} heads")
        merged = {**feats, **sd_h}
        missing, unexpected = self.load_state_dict(merged, strict=True)
        assert not missing and not unexpected
        logger.info("Loaded LPIPS-%s from %s and %s", self.net, backbone, heads)
        return self


def _installed_heads(net: str) -> Optional[Path]:
    """The head file of an installed ``lpips`` package, when its bytes are the official ones."""
    try:
        spec = importlib.util.find_spec("lpips")  # locates the package without importing it
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root) / "weights" / "v0.1" / f"{net}.pth"
        if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == LPIPS_HEADS[net].sha256:
            return p
    return None


def load_lpips(
    net: str = "alex",
    *,
    search_dirs: Optional[Sequence[os.PathLike | str]] = None,
    download_dir: Optional[os.PathLike | str] = None,
    allow_download: Optional[bool] = None,
) -> LPIPS:
    """Find (or download, SHA-256 checked) the official weights and build :class:`LPIPS` on the CPU.

    Args:
        net: ``"alex"`` (default, the LPIPS paper's recommendation) or ``"vgg"``.
        search_dirs: folders to look in (default: see :mod:`movingbg.eval._weights`).
        download_dir: where downloads go (default ``$MOVINGBG_EVAL_WEIGHTS`` or
            ``~/.cache/movingbg/eval``).
        allow_download: None = unless ``MOVINGBG_OFFLINE`` is set.

    Raises:
        movingbg.weights.WeightsNotFoundError: a file is missing and cannot be downloaded.
        movingbg.weights.ChecksumError: a download has the wrong SHA-256.
        ValueError: a file does not match the network (strict loading).
    """
    if net not in LPIPS_NETS:
        raise ValueError(f"net must be one of {LPIPS_NETS}, got {net!r}")
    dirs, dl, allow = resolve_dirs(search_dirs, download_dir, allow_download)
    errors: list[str] = []
    backbone = heads = None
    try:
        backbone = ensure_weight(LPIPS_BACKBONES[net], dirs, dl, allow_download=allow)
    except WeightsNotFoundError as exc:
        errors.append(str(exc))
    try:
        # heads: the model folders first, then an installed ``lpips`` package (same bytes), then download
        heads = (find_weight(LPIPS_HEADS[net].filename, dirs) or _installed_heads(net)
                 or ensure_weight(LPIPS_HEADS[net], dirs, dl, allow_download=allow))
    except WeightsNotFoundError as exc:
        errors.append(str(exc))
    if errors:
        raise WeightsNotFoundError(" ".join(errors))
    return LPIPS(net).load_weights(backbone, heads)


def lpips_frames(
    generated: np.ndarray,
    gt: np.ndarray,
    model: LPIPS,
    *,
    batch_size: int = 8,
    device: Optional[str | torch.device] = None,
) -> np.ndarray:
    """Per-frame LPIPS between two videos.

    Args:
        generated, gt: ``(T, H, W, 3)`` uint8 RGB (0..255, mapped to ``[-1, 1]``), same shape.
        model: a loaded :class:`LPIPS`.
        batch_size: frames per forward pass, >= 1.
        device: where to run (default: CUDA when available, else CPU).

    Returns:
        ``(T,)`` float64 distances (lower = more similar).
    """
    g, r = np.asarray(generated), np.asarray(gt)
    if g.ndim != 4 or g.shape[-1] != 3 or g.dtype != np.uint8:
        raise ValueError(f"generated must be (T, H, W, 3) uint8, got {g.shape} {g.dtype}")
    if r.shape != g.shape or r.dtype != np.uint8:
        raise ValueError(f"gt must be uint8 with the shape of generated {g.shape}, got {r.shape} {r.dtype}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(dev).eval()

    def to_t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1.0

    out = []
    with torch.inference_mode():
        for i in range(0, len(g), int(batch_size)):
            out.append(model(to_t(g[i : i + batch_size]), to_t(r[i : i + batch_size])).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)
