"""Frame latents encoded once per prepared video (``TrainConfig.cache_latents``).

The VAE is frozen, so a frame's posterior never changes during training: its mean and standard
deviation (an ``AutoencoderKL``), or its latent (a deterministic TAESD-shaped VAE), can be computed
once and reused by every sample that shows the frame. Sampling the posterior with the sample's own
noise, ``mean + std * noise``, is then exactly what :func:`~movingbg.train.encoders.encode_latents`
computes, so a run with the cache gives the losses of a run without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from .data import ClipDataset, Geometry
from .encoders import posterior

__all__ = ["LatentCache"]


class LatentCache:
    """Scaled latents of every frame of a :class:`ClipDataset`'s videos, encoded on first use.

    Args:
        vae: the frozen VAE (``AutoencoderKL`` or ``AutoencoderTiny``).
        dataset: where the frames come from (its options give the training size and crop).
        scale: the model's ``vae_scale_factor``.
        chunk: frames per encoder call.
    """

    def __init__(self, vae, dataset: ClipDataset, scale: float, chunk: int = 8) -> None:
        self.vae, self.dataset, self.scale, self.chunk = vae, dataset, float(scale), int(chunk)
        self._videos: dict[int, tuple[torch.Tensor, Optional[torch.Tensor]]] = {}

    def __len__(self) -> int:
        """Videos encoded so far."""
        return len(self._videos)

    @torch.no_grad()
    def _encode_video(self, index: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        video = self.dataset.videos[index]
        o = self.dataset.options
        geo = Geometry(video.width, video.height, o.width, o.height)
        frames = geo.images(video.frames(list(range(video.num_frames))))
        device = next(self.vae.parameters()).device
        means, stds = [], []
        for i in range(0, len(frames), self.chunk):
            x = torch.from_numpy(frames[i:i + self.chunk]).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            mean, std = posterior(self.vae, x)
            means.append(mean.float() * self.scale)
            if std is not None:
                stds.append(std.float() * self.scale)
        return torch.cat(means), (torch.cat(stds) if stds else None)

    def video(self, index: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(mean, std)`` of video ``index``'s frames, each ``(N, C, h, w)`` scaled; std None for a
        deterministic VAE."""
        if index not in self._videos:
            self._videos[index] = self._encode_video(index)
        return self._videos[index]

    def latents(self, video: int, frames: Sequence[int], noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scaled latents of ``frames`` of ``video``: ``(len(frames), C, h, w)``; ``noise`` (same shape)
        samples the posterior like :func:`~movingbg.train.encoders.encode_latents`, None = its mean."""
        mean, std = self.video(video)
        idx = torch.as_tensor(list(frames), dtype=torch.long, device=mean.device)
        z = mean.index_select(0, idx)
        if std is None or noise is None:
            return z
        return z + std.index_select(0, idx) * noise.to(z)
