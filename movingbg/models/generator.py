"""The MovingBG video generator network (core, no ComfyUI).

``MovingBGModel`` holds four parts:

* ``denoising_unet`` -- diffusers ``UNetMotionModel`` (SD1.5 U-Net + AnimateDiff motion modules after
  every spatial block). Input = noise latent ``(4)`` ++ condition latent in frame 0 ``(4)`` ++ a
  first-frame marker ``(1)`` along channels (9 channels; the 5 new ones start at zero).
* ``reference_unet`` -- plain ``UNet2DConditionModel`` (no output head) run once per video at t = 0
  on the reference latent; its spatial self-attention inputs form a :class:`ReferenceBank` that the
  denoising U-Net's self-attentions with the same module path also attend to.
* ``fg_encoder`` / ``bg_encoder`` -- :class:`MotionEncoder` on pose renders / track maps; their
  features (times ``fg_scale`` / ``bg_scale``) are summed and added right after ``conv_in``.

Cross-attention reads a ``(B, 1, D)`` CLIP image embedding (zeros for the unconditional branch).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from diffusers import UNet2DConditionModel, UNetMotionModel
from torch import nn

from .config import MovingBGConfig
from .encoders import MotionEncoder
from .reference import ReferenceAttnProcessor, ReferenceBank, install_reference_processors

logger = logging.getLogger(__name__)

__all__ = ["MovingBGModel", "denoising_unet_kwargs", "build_reference_unet"]

_MOTION_BLOCK = {
    "CrossAttnDownBlock2D": "CrossAttnDownBlockMotion",
    "DownBlock2D": "DownBlockMotion",
    "CrossAttnUpBlock2D": "CrossAttnUpBlockMotion",
    "UpBlock2D": "UpBlockMotion",
}
_SHARED_UNET_KEYS = (
    "sample_size", "out_channels", "block_out_channels", "layers_per_block", "downsample_padding",
    "mid_block_scale_factor", "act_fn", "norm_num_groups", "norm_eps", "cross_attention_dim",
    "transformer_layers_per_block", "use_linear_projection",
)


def denoising_unet_kwargs(config: MovingBGConfig) -> dict[str, Any]:
    """``UNetMotionModel(**kwargs)`` arguments of the denoising U-Net described by ``config``.

    Same derivation as ``UNetMotionModel.from_unet2d`` (block types mapped to their motion
    versions, heads from ``attention_head_dim`` when ``num_attention_heads`` is unset), plus the
    motion-module settings and ``in_channels = config.in_channels``.
    """
    u = config.unet_kwargs()
    kwargs = {k: u[k] for k in _SHARED_UNET_KEYS if k in u}
    kwargs.update(
        in_channels=config.in_channels,
        down_block_types=tuple(_MOTION_BLOCK[t] for t in u["down_block_types"]),
        up_block_types=tuple(_MOTION_BLOCK[t] for t in u["up_block_types"]),
        num_attention_heads=u.get("num_attention_heads") or u.get("attention_head_dim", 8),
        motion_max_seq_length=config.motion.max_seq_length,
        motion_num_attention_heads=config.motion.num_attention_heads,
        use_motion_mid_block=config.motion.use_mid_block,
        temporal_transformer_layers_per_block=config.motion.transformer_layers_per_block,
        temporal_transformer_layers_per_mid_block=config.motion.transformer_layers_per_block,
    )
    return kwargs


def build_reference_unet(config: MovingBGConfig) -> UNet2DConditionModel:
    """The reference U-Net: ``UNet2DConditionModel(**config.unet)`` without its output head.

    ``conv_norm_out`` / ``conv_act`` are removed and ``conv_out`` is an identity (as in
    Moore-AnimateAnyone's ``reference_unet.pth``, which has no ``conv_norm_out.*`` / ``conv_out.*``).
    Only the features banked by its self-attentions are used; its returned sample is meaningless.
    """
    unet = UNet2DConditionModel(**config.unet_kwargs())
    unet.conv_norm_out = None
    unet.conv_act = None
    unet.conv_out = nn.Identity()
    return unet


@contextlib.contextmanager
def _added_to_output(module: nn.Module, extra: torch.Tensor | None) -> Iterator[None]:
    """While active, ``module(x)`` returns ``module(x) + extra`` (a removable forward hook)."""
    if extra is None:
        yield
        return
    handle = module.register_forward_hook(lambda _mod, _args, out: out + extra)
    try:
        yield
    finally:
        handle.remove()


class MovingBGModel(nn.Module):
    """Denoising U-Net + reference U-Net + foreground / background motion encoders.

    Args:
        config: the architecture; parts switched off in it (``use_fg`` ...) are ``None``.

    Attributes:
        denoising_unet: ``UNetMotionModel`` with ``config.in_channels`` input channels.
        reference_unet: ``UNet2DConditionModel`` without output head, or None.
        fg_encoder, bg_encoder: :class:`MotionEncoder` or None.
        reference_paths: bank keys = module paths of the spatial self-attentions (both U-Nets).
    """

    def __init__(self, config: MovingBGConfig) -> None:
        super().__init__()
        self.config = config
        self.denoising_unet = UNetMotionModel(**denoising_unet_kwargs(config))
        with torch.no_grad():
            self.denoising_unet.conv_in.weight[:, config.latent_channels:].zero_()
        self.reference_unet = build_reference_unet(config) if config.use_reference else None
        self.fg_encoder = self._new_encoder() if config.use_fg else None
        self.bg_encoder = self._new_encoder() if config.use_bg else None
        self.reference_paths: tuple[str, ...] = ()
        if self.reference_unet is not None:
            read = install_reference_processors(self.denoising_unet)
            write = install_reference_processors(self.reference_unet)
            if read != write:
                raise RuntimeError(f"reference/denoising self-attention paths differ: "
                                   f"{sorted(set(read) ^ set(write))}")
            self.reference_paths = tuple(read)

    def _ensure_reference_processors(self, unet: nn.Module) -> None:
        """Re-install the reference processors if someone replaced them (e.g. ``set_attn_processor``)."""
        for path in self.reference_paths:
            if not isinstance(unet.get_submodule(path).processor, ReferenceAttnProcessor):
                logger.warning("attention processors of %s were replaced; re-installing the reference "
                               "attention", type(unet).__name__)
                install_reference_processors(unet)
                return

    def _new_encoder(self) -> MotionEncoder:
        c = self.config
        return MotionEncoder(c.encoder_in_channels, c.encoder_channels, c.encoder_out_channels)

    @property
    def dtype(self) -> torch.dtype:
        return self.denoising_unet.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.denoising_unet.conv_in.weight.device

    # ---- reference ---------------------------------------------------------------------------
    def encode_reference(self, ref_latent: torch.Tensor, clip_embeds: torch.Tensor | None = None) -> ReferenceBank:
        """Run the reference U-Net once (t = 0) and return its bank.

        Args:
            ref_latent: ``(B, 4, h, w)`` VAE latent of the reference image (scaled like the noise).
            clip_embeds: ``(B, 1, D)`` (or ``(B, D)``) CLIP image embedding; None = zeros.

        Returns:
            :class:`ReferenceBank` with ``(B, h_k * w_k, C_k)`` per self-attention path; reusable for
            every clip and sampling step of the video (``.detach()`` it when not training).
        """
        if self.reference_unet is None:
            raise RuntimeError("this MovingBGModel was built with use_reference=False")
        if ref_latent.ndim != 4 or ref_latent.shape[1] != self.config.latent_channels:
            raise ValueError(f"ref_latent must be (B, {self.config.latent_channels}, h, w), "
                             f"got {tuple(ref_latent.shape)}")
        self._ensure_reference_processors(self.reference_unet)
        batch = ref_latent.shape[0]
        store: dict[str, torch.Tensor] = {}
        t = torch.zeros(batch, dtype=torch.long, device=ref_latent.device)
        self.reference_unet(ref_latent.to(self.dtype), t, encoder_hidden_states=self._clip_tokens(clip_embeds, batch),
                            cross_attention_kwargs={"reference_store": store}, return_dict=False)
        missing = [p for p in self.reference_paths if p not in store]
        if missing:
            raise RuntimeError(f"reference U-Net did not record {missing}")
        return ReferenceBank({p: store[p] for p in self.reference_paths})

    # ---- denoising ---------------------------------------------------------------------------
    def forward(
        self,
        noisy: torch.Tensor,
        timestep: torch.Tensor | float | int,
        *,
        clip_embeds: torch.Tensor | None = None,
        bank: ReferenceBank | Mapping[str, torch.Tensor] | None = None,
        cond_latent: torch.Tensor | None = None,
        pose_maps: torch.Tensor | None = None,
        track_maps: torch.Tensor | None = None,
        fg_scale: float = 1.0,
        bg_scale: float = 1.0,
        reference_keep: torch.Tensor | Sequence[bool] | None = None,
    ) -> torch.Tensor:
        """One denoising prediction for a clip.

        Args:
            noisy: ``(B, 4, F, h, w)`` noisy latents.
            timestep: scalar or ``(B,)``.
            clip_embeds: ``(B, 1, D)`` CLIP image embedding; None = zeros (unconditional branch).
            bank: from :meth:`encode_reference` (batch B or 1); None = no reference attention.
            cond_latent: ``(B, 4, h, w)`` condition latent placed as frame 0 (needs ``use_concat``);
                None = zeros and an all-zero marker channel.
            pose_maps: ``(B, 3, F, H, W)`` pose renders in 0..1, ``H = h * 8`` (needs ``use_fg``).
            track_maps: ``(B, 3, F, H, W)`` track maps in 0..1 (needs ``use_bg``).
            fg_scale, bg_scale: multipliers on the encoders' features (0 skips the encoder).
            reference_keep: ``(B,)`` bools (tensor or sequence; needs ``bank``): False = that sample
                gets no reference attention, exactly as with ``bank=None`` (e.g. ``[True, False]`` for
                classifier-free guidance batched as ``[cond ; uncond]`` with a batch-1 bank). None =
                every sample sees the bank. A tensor is read once per call (one device sync).

        Returns:
            ``(B, 4, F, h, w)`` prediction (noise or v, whatever the weights were trained for).
        """
        if noisy.ndim != 5 or noisy.shape[1] != self.config.latent_channels:
            raise ValueError(f"noisy must be (B, {self.config.latent_channels}, F, h, w), got {tuple(noisy.shape)}")
        batch, _, frames, h, w = noisy.shape
        if frames > self.config.motion.max_seq_length:
            raise ValueError(f"{frames} frames exceed the motion modules' maximum {self.config.motion.max_seq_length}")
        sample = self._unet_input(noisy.to(self.dtype), cond_latent)
        tokens = self._clip_tokens(clip_embeds, batch).repeat_interleave(frames, dim=0)
        motion = self._motion_features(pose_maps, track_maps, fg_scale, bg_scale, (batch, frames, h, w))
        kwargs = self._bank_kwargs(bank, batch, reference_keep)
        with _added_to_output(self.denoising_unet.conv_in, motion):
            out = self.denoising_unet(sample, timestep, encoder_hidden_states=tokens,
                                      cross_attention_kwargs=kwargs, return_dict=False)[0]
        return out

    def _unet_input(self, noisy: torch.Tensor, cond_latent: torch.Tensor | None) -> torch.Tensor:
        """``(B, 4, F, h, w)`` -> ``(B, in_channels, F, h, w)``: ``[noisy ; cond in frame 0 ; marker]``."""
        if not self.config.use_concat:
            if cond_latent is not None:
                raise ValueError("cond_latent given but the model was built with use_concat=False")
            return noisy
        batch, channels, frames, h, w = noisy.shape
        cond = noisy.new_zeros(batch, channels + 1, frames, h, w)
        if cond_latent is not None:
            if tuple(cond_latent.shape) != (batch, channels, h, w):
                raise ValueError(f"cond_latent must be {(batch, channels, h, w)}, got {tuple(cond_latent.shape)}")
            cond[:, :channels, 0] = cond_latent.to(noisy.dtype)
            cond[:, channels, 0] = 1.0
        return torch.cat([noisy, cond], dim=1)

    def _clip_tokens(self, clip_embeds: torch.Tensor | None, batch: int) -> torch.Tensor:
        """``(B, 1, D)`` cross-attention tokens; zeros when ``clip_embeds`` is None."""
        dim = self.config.cross_attention_dim
        if clip_embeds is None:
            return torch.zeros(batch, 1, dim, dtype=self.dtype, device=self.device)
        if clip_embeds.ndim == 2:
            clip_embeds = clip_embeds[:, None]
        if clip_embeds.ndim != 3 or clip_embeds.shape[-1] != dim or clip_embeds.shape[0] not in (1, batch):
            raise ValueError(f"clip_embeds must be ({batch}, 1, {dim}), got {tuple(clip_embeds.shape)}")
        return clip_embeds.expand(batch, -1, -1).to(self.dtype)

    def _motion_features(self, pose_maps: torch.Tensor | None, track_maps: torch.Tensor | None,
                         fg_scale: float, bg_scale: float, bfhw: tuple[int, int, int, int]) -> torch.Tensor | None:
        """Sum of ``scale * encoder(maps)`` as ``(B*F, C0, h, w)``, or None when nothing applies."""
        total = None
        parts = (("pose_maps", pose_maps, self.fg_encoder, fg_scale, "use_fg"),
                 ("track_maps", track_maps, self.bg_encoder, bg_scale, "use_bg"))
        for name, maps, encoder, scale, flag in parts:
            if maps is None or scale == 0:
                continue
            if encoder is None:
                raise ValueError(f"{name} given but the model was built with {flag}=False")
            feats = encoder(self._frames_first(maps, name, bfhw)) * scale
            total = feats if total is None else total + feats
        return total

    def _frames_first(self, maps: torch.Tensor, name: str, bfhw: tuple[int, int, int, int]) -> torch.Tensor:
        """``(B, C, F, H, W)`` -> ``(B*F, C, H, W)`` (frame-major like the U-Net's batch)."""
        batch, frames, h, w = bfhw
        d = self.config.encoder_downscale
        expected = (batch, self.config.encoder_in_channels, frames, h * d, w * d)
        if tuple(maps.shape) != expected:
            raise ValueError(f"{name} must be {expected} (B, C, F, H, W), got {tuple(maps.shape)}")
        return maps.to(self.dtype).permute(0, 2, 1, 3, 4).reshape(batch * frames, expected[1], expected[3], expected[4])

    def _bank_kwargs(self, bank: ReferenceBank | Mapping[str, torch.Tensor] | None, batch: int,
                     reference_keep: torch.Tensor | Sequence[bool] | None = None) -> dict[str, Any] | None:
        """Validate the bank and wrap it as ``cross_attention_kwargs``.

        ``reference_keep`` becomes a tuple of Python bools (read once here, not in every attention
        layer); all True = no switch, all False = no bank at all (the same call as ``bank=None``).
        """
        keep = _keep_flags(reference_keep, batch)
        if keep is not None and bank is None:
            raise ValueError("reference_keep given without a bank")
        if keep is not None and all(keep):
            keep = None
        if bank is None or (keep is not None and not any(keep)):
            return None
        if self.reference_unet is None:
            raise ValueError("bank given but the model was built with use_reference=False")
        if not isinstance(bank, ReferenceBank):
            bank = ReferenceBank(dict(bank))
        missing = [p for p in self.reference_paths if p not in bank.features]
        unexpected = [k for k in bank.features if k not in self.reference_paths]
        if missing or unexpected:
            raise ValueError(f"reference bank does not match the model: missing {missing}, unexpected {unexpected}")
        if bank.batch_size not in (1, batch):
            raise ValueError(f"reference bank batch {bank.batch_size} must be 1 or {batch}")
        self._ensure_reference_processors(self.denoising_unet)
        if keep is None:
            return {"reference_bank": bank.features}
        return {"reference_bank": bank.features, "reference_keep": keep}


def _keep_flags(keep: torch.Tensor | Sequence[bool] | None, batch: int) -> tuple[bool, ...] | None:
    """``reference_keep`` as ``batch`` Python bools (None stays None)."""
    if keep is None:
        return None
    if isinstance(keep, torch.Tensor):
        if keep.ndim != 1 or keep.dtype != torch.bool:
            raise ValueError(f"reference_keep must be a ({batch},) bool tensor, got {keep.dtype} {tuple(keep.shape)}")
        keep = keep.tolist()
    flags = tuple(keep)
    if len(flags) != batch or not all(isinstance(k, bool) for k in flags):
        raise ValueError(f"reference_keep must be {batch} bools (one per sample), got {flags!r}")
    return flags
