"""Train a TAESD-shaped VAE (diffusers ``AutoencoderTiny``) on video frames.

The miniature model needs a VAE that stock ComfyUI can load and that knows its world (the synthetic
frames); see :mod:`movingbg.models.vae`. Training is a plain autoencoder objective on random crops
(the network is fully convolutional): L1 + MSE on the reconstruction, and a small penalty that keeps
the latents inside TAESD's ±3 clamp. Deterministic for one seed and thread count.

``python -m movingbg.train.vae FRAMES_DIR_OR_VIDEOS... --out vae.safetensors --steps 2000``
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = ["VAETrainOptions", "VAETrainResult", "box_init_taesd", "train_taesd", "latent_std", "main"]

_TENT = torch.tensor([0.25, 0.5, 0.25])


@torch.no_grad()
def box_init_taesd(vae, gain: float = 2.0):
    """Initialise a TAESD-shaped ``AutoencoderTiny`` so that it already is a (blurry) autoencoder.

    Channels 0..2 of every layer carry the RGB image: the encoder averages 2x2 blocks at each stride
    and writes ``gain * (rgb - 0.5)`` into latent channels 0..2; the decoder inverts that, upsamples
    and smooths with a tent filter after every upsampling. Every residual block is the identity (its
    last convolution is zero) and latent channel 3 starts at zero, so all other weights keep their
    random initialisation and learn the detail from there. A box-initialised VAE reaches a useful
    reconstruction in a few hundred CPU steps, where a random one needs many thousands.
    """
    from torch import nn

    def rgb_passthrough(conv: nn.Conv2d, kernel: torch.Tensor, bias: float = 0.0) -> None:
        conv.weight[:3].zero_()
        conv.weight[3:, :3] *= 0.1  # the extra feature maps read the image, at a small scale
        for c in range(3):
            conv.weight[c, c] = kernel
        if conv.bias is not None:
            conv.bias[:3] = bias

    centre = torch.zeros(3, 3)
    centre[1, 1] = 1.0
    box = torch.zeros(3, 3)
    box[1:, 1:] = 0.25  # stride 2, padding 1: output (i, j) averages inputs (2i..2i+1, 2j..2j+1)
    tent = torch.outer(_TENT, _TENT)
    enc = list(vae.encoder.layers)
    dec = list(vae.decoder.layers)
    for layers in (enc, dec):
        for m in layers:
            if hasattr(m, "conv") and isinstance(m.conv, nn.Sequential):  # residual block -> identity
                last = m.conv[-1]
                last.weight.zero_()
                last.bias.zero_()
    convs = [m for m in enc if isinstance(m, nn.Conv2d)]
    rgb_passthrough(convs[0], centre)
    for conv in convs[1:-1]:
        rgb_passthrough(conv, box)
    head = convs[-1]
    head.weight.zero_()
    head.bias.zero_()
    for c in range(3):
        head.weight[c, c] = centre * gain
        head.bias[c] = -0.5 * gain
    dconvs = [m for m in dec if isinstance(m, nn.Conv2d)]
    first = dconvs[0]
    first.weight[3:] *= 0.1
    first.weight[:3].zero_()
    for c in range(3):
        first.weight[c, c] = centre / gain
        first.bias[c] = 0.5
    for conv in dconvs[1:-1]:
        rgb_passthrough(conv, tent)
    out = dconvs[-1]
    out.weight.zero_()
    out.bias.zero_()
    for c in range(3):
        out.weight[c, c] = centre
    return vae


@dataclass(frozen=True)
class VAETrainOptions:
    """Settings of :func:`train_taesd`.

    Attributes:
        steps: optimizer steps; batch: crops per step; crop: crop size in px (multiple of 8, at most
            the frame size); learning_rate: AdamW learning rate (cosine decay to 10 %);
        latent_penalty: weight of ``mean(relu(|z| - 2.5)^2)`` (keeps latents inside the decoder's clamp);
        seed: crops, initialisation and order.
    """

    steps: int = 2000
    batch: int = 16
    crop: int = 32
    learning_rate: float = 1e-3
    latent_penalty: float = 1e-2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1:
            raise ValueError(f"steps and batch must be >= 1, got steps={self.steps}, batch={self.batch}")
        if self.crop < 8 or self.crop % 8:
            raise ValueError(f"crop must be a multiple of 8 (>= 8), got {self.crop}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


@dataclass(frozen=True)
class VAETrainResult:
    vae: torch.nn.Module
    losses: tuple[float, ...]
    psnr: float
    """Reconstruction PSNR (dB) on the full frames of the held-out set (or the training frames)."""
    latent_std: float
    """Standard deviation of the latents; the model's ``vae_scale_factor`` is its inverse."""


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _chunks(frames: np.ndarray, chunk: int):
    for i in range(0, len(frames), chunk):
        yield _to_tensor(frames[i:i + chunk])


@torch.no_grad()
def latent_std(vae, frames: np.ndarray, chunk: int = 32) -> float:
    """Standard deviation of ``vae``'s latents over ``frames`` ``(N, H, W, 3)`` uint8."""
    zs = [vae.encode(x).latents for x in _chunks(frames, chunk)]
    return float(torch.cat(zs).float().std())


@torch.no_grad()
def reconstruction_psnr(vae, frames: np.ndarray, chunk: int = 32) -> float:
    """PSNR (dB) of ``frames`` ``(N, H, W, 3)`` uint8 sent through ``vae`` (encode -> decode)."""
    mse = []
    for x in _chunks(frames, chunk):
        y = vae.decode(vae.encode(x).latents).sample.clamp(-1, 1)
        mse.append(((y - x) / 2).pow(2).mean(dim=(1, 2, 3)))
    m = float(torch.cat(mse).mean())
    return 10 * math.log10(1.0 / max(m, 1e-12))


def train_taesd(frames: np.ndarray, options: VAETrainOptions = VAETrainOptions(), *,
                held_out: Optional[np.ndarray] = None, vae=None,
                on_step: Optional[Callable[[int, float], None]] = None) -> VAETrainResult:
    """Train a TAESD-shaped ``AutoencoderTiny`` on ``frames`` ``(N, H, W, 3)`` uint8 RGB.

    Args:
        held_out: frames to report the reconstruction PSNR on (default: ``frames``).
        vae: continue training this model (default: a fresh one, seeded by ``options.seed`` and
            initialised by :func:`box_init_taesd`).
        on_step: ``(step, loss)`` after every step.
    """
    from ..models.vae import build_taesd

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    n, h, w, _ = frames.shape
    if options.crop > min(h, w):
        raise ValueError(f"crop {options.crop} is larger than the frames ({w}x{h})")
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    if vae is None:
        vae = box_init_taesd(build_taesd())
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=options.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / options.steps))))
    losses: list[float] = []
    c = options.crop
    for step in range(options.steps):
        idx = rng.integers(0, n, options.batch)
        ys = rng.integers(0, h - c + 1, options.batch)
        xs = rng.integers(0, w - c + 1, options.batch)
        batch = np.stack([frames[i, y:y + c, x:x + c] for i, y, x in zip(idx, ys, xs)])
        flips = rng.random(options.batch) < 0.5
        batch[flips] = batch[flips, :, ::-1]
        x = _to_tensor(batch)
        z = vae.encode(x).latents
        y = vae.decode(z).sample
        loss = F.l1_loss(y, x) + F.mse_loss(y, x) + options.latent_penalty * F.relu(z.abs() - 2.5).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, losses[-1])
    vae.eval().requires_grad_(False)
    test = frames if held_out is None else np.asarray(held_out)
    return VAETrainResult(vae, tuple(losses), reconstruction_psnr(vae, test), latent_std(vae, frames))


def _read_frames(paths: Sequence[str], limit: int) -> np.ndarray:
    from ..io.video import read_video

    out: list[np.ndarray] = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise ValueError(f"inputs: {p} is no file or folder")
        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in (".mp4", ".webm", ".mov", ".mkv", ".gif")) \
            if path.is_dir() else [path]
        for f in files:
            out.extend(read_video(f).frames)
            if limit and len(out) >= limit:
                return np.stack(out[:limit])
    if not out:
        raise ValueError(f"no video frames found in {list(paths)}")
    sizes = {fr.shape for fr in out}
    if len(sizes) > 1:
        raise ValueError(f"videos have different frame sizes {sorted(sizes)}; resize them first")
    return np.stack(out)


def main(argv: Optional[list[str]] = None) -> int:
    from ..models.vae import save_taesd

    ap = argparse.ArgumentParser(prog="python -m movingbg.train.vae", description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="+", help="videos or folders of videos (same frame size)")
    ap.add_argument("--out", required=True, help="output .safetensors (ComfyUI TAESD layout; put it in models/vae/)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-frames", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        frames = _read_frames(args.inputs, args.max_frames)
        opts = VAETrainOptions(steps=args.steps, batch=args.batch, crop=args.crop, learning_rate=args.lr,
                               seed=args.seed)
    except ValueError as exc:
        logger.error("error: %s", exc)
        return 2
    t0 = time.perf_counter()

    def log(step: int, loss: float) -> None:
        if step % 100 == 0 or step == opts.steps:
            logger.info("step %d/%d loss %.4f (%.1f s)", step, opts.steps, loss, time.perf_counter() - t0)

    res = train_taesd(frames, opts, on_step=log)
    save_taesd(res.vae, args.out)
    sys.stdout.write(f"wrote {args.out}: reconstruction PSNR {res.psnr:.2f} dB, latent std {res.latent_std:.4f} "
                     f"(use vae_scale_factor {1.0 / res.latent_std:.5f} in the MovingBG config)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
