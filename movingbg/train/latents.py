"""Frame latents encoded once per prepared video (``TrainConfig.cache_latents``).

The VAE is frozen, so a frame's posterior never changes during training: its mean and standard
deviation (an ``AutoencoderKL``), or its latent (a deterministic TAESD-shaped VAE), can be computed
once and reused by every sample that shows the frame. Sampling the posterior with the sample's own
noise, ``mean + std * noise``, is then exactly what :func:`~movingbg.train.encoders.encode_latents`
computes, so a run with the cache gives the losses of a run without it.

With a ``folder`` (``TrainConfig.latent_cache_dir``) the cache also lives on disk, one safetensors
file per video under ``folder/<VAE fingerprint>-<W>x<H>/``: a resumed run, the other processes of a
multi-GPU run and later runs with the same VAE weights and training size read the latents instead of
encoding them again, and :meth:`LatentCache.fill` splits the first encoding among the processes. A file
that is unreadable, or was written for a video whose ``meta.json`` or frames have changed since, is
encoded anew.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

import torch

from .data import ClipDataset, Geometry
from .encoders import posterior

__all__ = ["LatentCache", "vae_fingerprint"]

logger = logging.getLogger(__name__)


def vae_fingerprint(vae) -> str:
    """16 hex digits of SHA-256 over the VAE's weights (names, dtypes, shapes, values): the same weights
    give the same fingerprint whatever file or folder they were loaded from."""
    h = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _video_digest(video) -> str:
    """What a video's latents depend on: its ``meta.json`` and its frames (size and first MiB of the file,
    or the folder's file names and sizes), so a video prepared anew, or another dataset's video of the
    same name, is not mistaken for the one on disk."""
    root = Path(video.path)
    h = hashlib.sha256((root / "meta.json").read_bytes())
    frames = root / str(video.meta.get("frames", "frames.mp4"))
    if frames.is_file():
        h.update(str(frames.stat().st_size).encode())
        with open(frames, "rb") as f:
            h.update(f.read(1 << 20))
    elif frames.is_dir():
        for item in sorted(frames.iterdir()):
            h.update(f"{item.name}|{item.stat().st_size}|".encode())
    return h.hexdigest()[:16]


class LatentCache:
    """Scaled latents of every frame of a :class:`ClipDataset`'s videos, encoded on first use.

    Args:
        vae: the frozen VAE (``AutoencoderKL`` or ``AutoencoderTiny``).
        dataset: where the frames come from (its options give the training size and crop).
        scale: the model's ``vae_scale_factor``.
        chunk: frames per encoder call.
        folder: also keep the latents on disk there (see the module docstring); None = memory only.
    """

    def __init__(self, vae, dataset: ClipDataset, scale: float, chunk: int = 8,
                 folder: Optional[os.PathLike | str] = None) -> None:
        self.vae, self.dataset, self.scale, self.chunk = vae, dataset, float(scale), int(chunk)
        self._videos: dict[int, tuple[torch.Tensor, Optional[torch.Tensor]]] = {}
        self.folder: Optional[Path] = None
        if folder is not None:
            o = dataset.options
            self.folder = Path(folder) / f"{vae_fingerprint(vae)}-{o.width}x{o.height}"

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
            means.append(mean.float().cpu())
            if std is not None:
                stds.append(std.float().cpu())
        return torch.cat(means), (torch.cat(stds) if stds else None)

    def path(self, index: int) -> Optional[Path]:
        """The file of video ``index`` on disk (None without a folder)."""
        return None if self.folder is None else self.folder / f"{self.dataset.videos[index].name}.safetensors"

    def _read(self, index: int, load: bool = True) -> Optional[tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """Video ``index``'s unscaled ``(mean, std)`` from its file, or None (no file, or one to encode again:
        warned). ``load=False`` only validates the file (metadata and shapes, no tensor read) and returns
        ``()`` for a good one."""
        from safetensors import safe_open

        path = self.path(index)
        if path is None or not path.is_file():
            return None
        video = self.dataset.videos[index]
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("video") != _video_digest(video):
                    logger.warning("latent cache: %s was written for an older version of %s; encoding it again",
                                   path, video.name)
                    return None
                shape = tuple(f.get_slice("mean").get_shape())
                has_std = "std" in f.keys()
                if len(shape) != 4 or shape[0] != video.num_frames or (
                        has_std and tuple(f.get_slice("std").get_shape()) != shape):
                    logger.warning("latent cache: %s holds %s latents for %d frames; encoding it again",
                                   path, shape, video.num_frames)
                    return None
                if not load:
                    return ()
                return f.get_tensor("mean"), (f.get_tensor("std") if has_std else None)
        except Exception as exc:  # a truncated or foreign file: encode again rather than stop the run
            logger.warning("latent cache: cannot read %s (%s); encoding it again", path, exc)
            return None

    def _write(self, index: int, mean: torch.Tensor, std: Optional[torch.Tensor]) -> None:
        from safetensors.torch import save_file

        path = self.path(index)
        tensors = {"mean": mean.contiguous()} | ({"std": std.contiguous()} if std is not None else {})
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # several processes may write the same video
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(tmp), metadata={"video": _video_digest(self.dataset.videos[index])})
            os.replace(tmp, path)
        except OSError as exc:
            raise ValueError(f"latent_cache_dir: cannot write {path} ({exc}); give a writable folder with room "
                             f"for the latents, or null to keep them in memory only") from exc

    def _unscaled(self, index: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Video ``index``'s unscaled ``(mean, std)``: read from the folder, else encoded (and written)."""
        found = self._read(index)
        if found is not None:
            return found
        mean, std = self._encode_video(index)
        if self.folder is not None:
            self._write(index, mean, std)
        return mean, std

    def video(self, index: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(mean, std)`` of video ``index``'s frames, each ``(N, C, h, w)`` scaled; std None for a
        deterministic VAE."""
        if index not in self._videos:
            mean, std = self._unscaled(index)
            device = next(self.vae.parameters()).device
            self._videos[index] = (mean.to(device) * self.scale,
                                   None if std is None else std.to(device) * self.scale)
        return self._videos[index]

    def fill(self, rank: int = 0, world_size: int = 1,
             log: Optional[Callable[[str], None]] = None) -> int:
        """Write the missing files of this process's share of the videos (every ``world_size``-th from
        ``rank``) to the folder; the other processes write the rest (wait for them before reading). Returns
        how many videos this process encoded. Needs a folder."""
        if self.folder is None:
            raise ValueError("LatentCache.fill needs a folder (latent_cache_dir)")
        share = range(rank, len(self.dataset.videos), world_size)
        encoded, t0, last = 0, time.perf_counter(), time.perf_counter()
        for n, index in enumerate(share, 1):
            if self._read(index, load=False) is None:  # validated only: training reads it on first use
                self._write(index, *self._encode_video(index))
                encoded += 1
            now = time.perf_counter()
            if log is not None and (now - last > 30 or n == len(share)):
                last = now
                log(f"latent cache: {n}/{len(share)} videos of process {rank} ready ({encoded} encoded in "
                    f"{now - t0:.0f} s) in {self.folder}")
        return encoded

    def latents(self, video: int, frames: Sequence[int], noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scaled latents of ``frames`` of ``video``: ``(len(frames), C, h, w)``; ``noise`` (same shape)
        samples the posterior like :func:`~movingbg.train.encoders.encode_latents`, None = its mean."""
        mean, std = self.video(video)
        idx = torch.as_tensor(list(frames), dtype=torch.long, device=mean.device)
        z = mean.index_select(0, idx)
        if std is None or noise is None:
            return z
        return z + std.index_select(0, idx) * noise.to(z)
