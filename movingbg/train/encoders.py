"""The frozen encoders of training: the VAE (pixels -> latents) and an optional CLIP image encoder.

Both are loaded from local files only (nothing is downloaded):

* VAE: a diffusers ``AutoencoderKL`` folder (``config.json`` + weights, e.g. ``sd-vae-ft-mse/`` or a
  pipeline's ``vae/``), or a single ``.safetensors`` / ``.ckpt`` / ``.pt`` with diffusers keys or the
  original LDM keys (``encoder.down.0.block.0...``, optionally under ``first_stage_model.``), for which
  the SD1.5 layout is assumed (128/256/512/512 channels, 2 layers, 32 groups, 4 latent channels;
  the channels are read off the weights); or a TAESD-shaped ``AutoencoderTiny`` (the miniature model's
  VAE, :mod:`movingbg.models.vae`): ComfyUI's single-file TAESD layout or diffusers keys, or a diffusers
  ``AutoencoderTiny`` folder.
* CLIP: a transformers ``CLIPVisionModelWithProjection`` folder; ``image_embeds`` of the reference
  (resized to the encoder's ``image_size``, OpenAI CLIP normalisation) are the cross-attention tokens.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = ["load_vae", "encode_latents", "posterior", "decode_latents", "ClipImageEncoder", "load_clip_encoder"]

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_LDM_PREFIXES = ("first_stage_model.", "vae.")


def _vae_config_from_keys(state: dict[str, torch.Tensor]) -> dict:
    """SD-layout ``AutoencoderKL`` arguments with channel counts read from diffusers-layout keys."""
    widths = []
    i = 0
    while f"encoder.down_blocks.{i}.resnets.0.conv1.weight" in state:
        widths.append(int(state[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]))
        i += 1
    if not widths:
        raise ValueError("vae: the weights have no encoder.down_blocks.* keys; not an AutoencoderKL")
    layers = len({k.split(".")[3] for k in state if k.startswith("encoder.down_blocks.0.resnets.")})
    latent = int(state["quant_conv.weight"].shape[0]) // 2 if "quant_conv.weight" in state else 4
    n = len(widths)
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(widths),
                layers_per_block=layers, latent_channels=latent, norm_num_groups=32)


def _ldm_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original LDM VAE keys -> diffusers keys (via diffusers' single-file converter)."""
    try:
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    except ImportError as exc:  # pragma: no cover - depends on the diffusers release
        raise ValueError("vae: this diffusers release cannot convert LDM-layout VAE weights; "
                         "give a diffusers AutoencoderKL folder instead") from exc
    widths = []
    while f"encoder.down.{len(widths)}.block.0.conv1.weight" in state:
        widths.append(int(state[f"encoder.down.{len(widths)}.block.0.conv1.weight"].shape[0]))
    n = len(widths)
    return convert_ldm_vae_checkpoint(state, {"down_block_types": ("DownEncoderBlock2D",) * n,
                                              "up_block_types": ("UpDecoderBlock2D",) * n,
                                              "layers_per_block": 2})


def load_vae(path: os.PathLike | str, dtype: torch.dtype = torch.float32):
    """Load a frozen ``AutoencoderKL`` in eval mode (see the module docstring for the accepted files).

    Raises:
        ValueError: naming ``vae`` when the file is not a usable VAE.
    """
    import json

    from diffusers import AutoencoderKL, AutoencoderTiny

    from ..models.convert import load_state_dict_file
    from ..models.vae import is_taesd_state, load_taesd

    p = Path(path)
    if p.is_dir():
        folder = p / "vae" if (p / "vae" / "config.json").is_file() else p
        if not (folder / "config.json").is_file():
            raise ValueError(f"vae: {p} has no config.json (expected a diffusers AutoencoderKL folder)")
        cls_name = json.loads((folder / "config.json").read_text()).get("_class_name", "AutoencoderKL")
        cls = AutoencoderTiny if cls_name == "AutoencoderTiny" else AutoencoderKL
        vae = cls.from_pretrained(str(folder), local_files_only=True)
    else:
        state = load_state_dict_file(p)
        if is_taesd_state(state):
            vae = load_taesd(state, f"vae: {p.name}")
            vae.requires_grad_(False)
            return (vae if dtype == torch.float32 else vae.to(dtype=dtype)).eval()
        for prefix in _LDM_PREFIXES:
            if any(k.startswith(prefix + "encoder.") for k in state):
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if any(k.startswith("encoder.down.") for k in state):
            state = _ldm_to_diffusers(state)
        vae = AutoencoderKL(**_vae_config_from_keys(state))
        missing, unexpected = vae.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"vae: {p.name} does not match an SD-layout AutoencoderKL: missing {missing[:8]}, "
                             f"unexpected {unexpected[:8]}")
    vae.requires_grad_(False)
    return (vae if dtype == torch.float32 else vae.to(dtype=dtype)).eval()


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor, scale: float, noise: Optional[torch.Tensor] = None,
                   chunk: int = 8) -> torch.Tensor:
    """Scaled VAE latents of images.

    Args:
        pixels: ``(N, 3, H, W)`` in -1..1.
        scale: the model's ``vae_scale_factor``.
        noise: ``(N, C, H/8, W/8)`` standard normal to sample the posterior with (``mean + std *
            noise``); None = the posterior mean. Ignored by deterministic VAEs (TAESD).
        chunk: images per encoder call.

    Returns:
        ``(N, C, H/8, W/8)`` float32.
    """
    out = []
    for i in range(0, pixels.shape[0], chunk):
        mean, std = posterior(vae, pixels[i:i + chunk])
        z = mean if std is None or noise is None else mean + std * noise[i:i + chunk].to(mean)
        out.append(z.float() * scale)
    return torch.cat(out)


@torch.no_grad()
def posterior(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Unscaled posterior ``(mean, std)`` of ``(N, 3, H, W)`` images in -1..1 in one encoder call; ``std`` is
    None for a deterministic VAE (TAESD), whose latent is ``mean``."""
    encoded = vae.encode(pixels.to(next(vae.parameters()).dtype))
    if not hasattr(encoded, "latent_dist"):
        return encoded.latents, None
    return encoded.latent_dist.mean, encoded.latent_dist.std


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, scale: float, chunk: int = 8) -> torch.Tensor:
    """``(N, C, h, w)`` scaled latents -> ``(N, 3, 8h, 8w)`` images in 0..1."""
    dtype = next(vae.parameters()).dtype
    out = [vae.decode(latents[i:i + chunk].to(dtype) / scale).sample.float() for i in range(0, len(latents), chunk)]
    return ((torch.cat(out) + 1) / 2).clamp(0, 1)


class ClipImageEncoder(torch.nn.Module):
    """Frozen CLIP vision tower with projection: ``(B, 3, H, W)`` in -1..1 -> ``(B, 1, D)`` image_embeds."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.size = int(model.config.image_size)
        self.register_buffer("mean", torch.tensor(_CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() + 1) / 2
        x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False, antialias=True)
        x = ((x.clamp(0, 1) - self.mean) / self.std).to(next(self.model.parameters()).dtype)
        return self.model(pixel_values=x).image_embeds.float()[:, None]


def load_clip_encoder(path: os.PathLike | str, dtype: torch.dtype = torch.float32) -> ClipImageEncoder:
    """A local transformers ``CLIPVisionModelWithProjection`` folder -> :class:`ClipImageEncoder`.

    Raises:
        ValueError: naming ``clip_encoder`` when it cannot be loaded.
    """
    try:
        from transformers import CLIPVisionModelWithProjection
    except ImportError as exc:
        raise ValueError("clip_encoder needs the 'transformers' package (pip install transformers)") from exc
    try:
        model = CLIPVisionModelWithProjection.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"clip_encoder: cannot load a CLIPVisionModelWithProjection from {path}: {exc}") from exc
    return ClipImageEncoder(model.to(dtype))
