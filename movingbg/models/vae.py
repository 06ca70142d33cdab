"""The miniature model's VAE: the TAESD architecture (diffusers ``AutoencoderTiny``), stored in the
single-file layout that ComfyUI's stock **Load VAE** node recognises.

Stable Diffusion's VAE cannot be downloaded on every machine, and a tiny ``AutoencoderKL`` is not
loadable by stock ComfyUI (it assumes SD's 128/256/512/512 channels). TAESD is: any file in
``models/vae/`` holding ``taesd_encoder.*`` / ``taesd_decoder.*`` keys is loaded as a TAESD by the old
(2024) and the current ComfyUI alike. So the miniature model carries a TAESD-shaped VAE trained on the
synthetic frames (:func:`movingbg.train.vae.train_taesd`) and the same nodes and workflows run it.

Layouts:

* diffusers ``AutoencoderTiny``: ``encoder.layers.{i}.*`` and ``decoder.layers.{i}.*``;
* ComfyUI / madebyollin TAESD: ``taesd_encoder.{i}.*`` and ``taesd_decoder.{i+1}.*`` (its decoder
  starts with a parameter-free clamp module), plus the scalars ``vae_scale`` and ``vae_shift``
  (ComfyUI encodes ``encoder(x) / vae_scale + vae_shift``; we store 1 and 0 and keep the latent
  scale in the model's ``vae_scale_factor`` like for SD's VAE).

Both sides compute the same function: ``encode(x) = encoder((x + 1) / 2)`` and
``decode(z) = 2 * decoder(3 * tanh(z / 3)) - 1`` for images in -1..1.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import torch

from ..io.atomic import FILE_MODE

__all__ = ["ENCODER_PREFIX", "DECODER_PREFIX", "is_taesd_state", "to_comfy_taesd", "from_comfy_taesd",
           "build_taesd", "load_taesd", "save_taesd"]

ENCODER_PREFIX = "taesd_encoder."
DECODER_PREFIX = "taesd_decoder."
_SCALARS = ("vae_scale", "vae_shift")
_DIFFUSERS_KEY = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)$")
_COMFY_KEY = re.compile(r"^taesd_(encoder|decoder)\.(\d+)\.(.+)$")


def is_taesd_state(state: dict) -> bool:
    """True for TAESD weights in either layout (ComfyUI single file or diffusers ``AutoencoderTiny``)."""
    return any(k.startswith(DECODER_PREFIX) for k in state) or any(k.startswith("decoder.layers.") for k in state)


def to_comfy_taesd(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers ``AutoencoderTiny`` state dict -> ComfyUI's single-file TAESD layout."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _DIFFUSERS_KEY.match(key)
        if m is None:
            raise ValueError(f"vae: {key!r} is not an AutoencoderTiny encoder/decoder key")
        part, index, rest = m.group(1), int(m.group(2)), m.group(3)
        index += 1 if part == "decoder" else 0
        out[f"taesd_{part}.{index}.{rest}"] = value
    ref = next(iter(out.values()))
    out["vae_scale"] = torch.ones((), dtype=ref.dtype)
    out["vae_shift"] = torch.zeros((), dtype=ref.dtype)
    return out


def from_comfy_taesd(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI's single-file TAESD layout -> diffusers ``AutoencoderTiny`` keys.

    Raises:
        ValueError: on keys of neither part, or a ``vae_scale`` / ``vae_shift`` other than 1 / 0
        (ComfyUI would rescale the latents, which the diffusers model cannot express).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _SCALARS:
            neutral = 1.0 if key == "vae_scale" else 0.0
            if abs(float(value) - neutral) > 1e-6:
                raise ValueError(f"vae: {key} = {float(value)} is not supported (expected {neutral}); put the "
                                 "latent scale in the MovingBG config's vae_scale_factor instead")
            continue
        m = _COMFY_KEY.match(key)
        if m is None:
            raise ValueError(f"vae: unexpected key {key!r} in a TAESD file (expected taesd_encoder.* / "
                             "taesd_decoder.*)")
        part, index, rest = m.group(1), int(m.group(2)), m.group(3)
        if part == "decoder":
            if index == 0:
                raise ValueError(f"vae: unexpected key {key!r} (TAESD's decoder.0 is the parameter-free clamp)")
            index -= 1
        out[f"{part}.layers.{index}.{rest}"] = value
    return out


def build_taesd(latent_channels: int = 4):
    """A randomly initialised TAESD-shaped ``AutoencoderTiny`` (the only shape ComfyUI's TAESD has)."""
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(latent_channels=int(latent_channels))


def load_taesd(state: dict[str, torch.Tensor], name: str = "vae"):
    """``AutoencoderTiny`` from a state dict in either layout; strict (missing or unexpected keys are named)."""
    if any(k.startswith((ENCODER_PREFIX, DECODER_PREFIX)) for k in state):
        state = from_comfy_taesd(state)
    latent = state.get("decoder.layers.0.weight")
    if latent is None:
        raise ValueError(f"{name}: not a TAESD / AutoencoderTiny state dict (no decoder.layers.0.weight)")
    vae = build_taesd(int(latent.shape[1]))
    missing, unexpected = vae.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{name}: does not match the TAESD layout: missing {sorted(missing)[:8]}, "
                         f"unexpected {sorted(unexpected)[:8]}")
    return vae


def save_taesd(vae, path: os.PathLike | str, dtype: Optional[torch.dtype] = torch.float16,
               metadata: Optional[dict[str, str]] = None) -> Path:
    """Write ``vae`` (``AutoencoderTiny``) atomically as one ComfyUI-loadable TAESD safetensors file."""
    from safetensors.torch import save_file

    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in vae.state_dict().items()}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(to_comfy_taesd(state), str(tmp), metadata={"format": "pt", "movingbg_vae": "taesd", **(metadata or {})})
    os.chmod(tmp, FILE_MODE)  # safetensors writes 0600
    os.replace(tmp, out)
    return out
