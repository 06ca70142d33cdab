"""Motion encoders: the pose-guider-shaped convolutional encoders for pose renders and track maps.

The layout (and the state-dict key names ``conv_in``, ``blocks.0-5``, ``conv_out``) match
Moore-AnimateAnyone's ``PoseGuider`` so that ``pose_guider.pth`` loads into the foreground encoder
as is. ``conv_out`` starts at zero, so an untrained encoder adds nothing to the U-Net.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["MotionEncoder"]


class MotionEncoder(nn.Module):
    """Pose-guider encoder: pixel-space maps -> latent-resolution U-Net features.

    ``conv_in`` (in -> c0), then for each stage ``c_i -> c_i`` and ``c_i -> c_{i+1}`` (stride 2),
    then a zero-initialised ``conv_out`` (c_last -> out). All 3x3 with bias, SiLU between; the inner layers are
    Kaiming-initialised (zero biases), so what reaches ``conv_out`` still depends on the maps.

    Args:
        in_channels: channels of the input maps (3 for RGB renders).
        channels: stage widths, e.g. ``(16, 32, 96, 256)``; downsampling is ``2 ** (len - 1)``.
        out_channels: feature channels (the U-Net's ``block_out_channels[0]``, 320 for SD1.5).
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 96, 256),
                 out_channels: int = 320) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        self.conv_in = nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1)
        blocks = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(channels[-1], out_channels, kernel_size=3, padding=1)
        self.downscale = 2 ** (len(channels) - 1)
        with torch.no_grad():
            # variance-preserving inner layers: with torch's default conv init the part of the activations that
            # depends on the maps shrinks ~3x per layer (~1e-3 of the first layer's after the 7 layers of the tiny
            # encoder), so the encoder is born deaf: sparse track maps then never get a gradient strong enough
            # to teach it (the miniature model's track encoder: still deaf after 3,000 + 3,000 steps)
            for conv in (self.conv_in, *self.blocks):
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                conv.bias.zero_()
            self.conv_out.weight.zero_()
            self.conv_out.bias.zero_()

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Encode maps.

        Args:
            maps: ``(N, in_channels, H, W)`` float in 0..1 (``N`` = batch x frames).

        Returns:
            ``(N, out_channels, ceil(H / d), ceil(W / d))`` features, ``d = self.downscale``.
        """
        x = F.silu(self.conv_in(maps))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)
