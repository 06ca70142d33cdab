"""Weight conversion: SD1.5 LDM checkpoints, AnimateDiff motion modules, Moore-AnimateAnyone files.

All conversions are strict. Each source is checked in ITS OWN layout first, so a
:class:`~movingbg.models.bundle.WeightLayoutError` names the keys as they appear in the user's file
(e.g. ``model.diffusion_model.input_blocks.1.1.proj_in.weight``), then renamed:

* LDM (``model.diffusion_model.*``) -> diffusers ``UNet2DConditionModel`` keys: own prefix table,
  derived from the config (levels, layers per block, which levels have attention).
* AnimateDiff (``...motion_modules.j.temporal_transformer.transformer_blocks.0.attention_blocks.0...``)
  -> diffusers ``UNetMotionModel`` / ``MotionAdapter`` keys (``...motion_modules.j.transformer_blocks.0.attn1...``).
  The two ``pos_encoder.pe`` buffers of a block must be equal; they load into ``pos_embed.pe``.
* A base U-Net given from outside a bundle (e.g. the LoRA-patched weights of a ComfyUI MODEL):
  :func:`ldm_unet_names` checks its LDM key shapes strictly and names them in diffusers layout,
  :func:`load_spatial_unet` writes it into a model's denoising and/or reference U-Net in place
  (motion modules, encoders and the extra ``conv_in`` channels stay).
* Moore-AnimateAnyone: denoising / reference U-Nets are already diffusers keys (the reference file
  has no ``conv_norm_out`` / ``conv_out``, and neither has our reference U-Net); ``pose_guider.pth``
  is the foreground encoder as is; ``motion_module.pth`` is AnimateDiff v2.

New parts start neutral: the background encoder (zero ``conv_out``) and the 5 concatenation
channels of ``conv_in`` (zeros).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from .bundle import WeightLayoutError, check_state_dict, empty_model, model_from_state_dict
from .config import MovingBGConfig
from .encoders import MotionEncoder
from .generator import MovingBGModel

logger = logging.getLogger(__name__)

__all__ = [
    "LDM_PREFIX",
    "load_state_dict_file",
    "ldm_unet_key_map",
    "ldm_unet_names",
    "convert_ldm_unet",
    "load_spatial_unet",
    "animatediff_to_diffusers_key",
    "diffusers_to_animatediff_key",
    "convert_animatediff_motion",
    "build_model_from_diffusers",
    "build_bundle_from_ldm",
    "build_bundle_from_moore",
]

StateDict = dict[str, torch.Tensor]

LDM_PREFIX = "model.diffusion_model."
_HEAD_PREFIXES = ("conv_norm_out.", "conv_out.")
_RESNET_RENAMES = (
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
)


# ---- files ------------------------------------------------------------------------------------
def load_state_dict_file(path: str | os.PathLike) -> StateDict:
    """Read a ``.safetensors`` / ``.pth`` / ``.ckpt`` / ``.bin`` state dict on the CPU.

    ``torch.load`` runs with ``weights_only=True``; a ``{"state_dict": ...}`` wrapper and a
    ``module.`` prefix on every key are removed; non-tensor entries are dropped.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path.name} does not hold a state dict (got {type(obj).__name__})")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    dropped = len(obj) - len(state)
    if dropped:
        logger.debug("%s: ignored %d non-tensor entries", path.name, dropped)
    return state


# ---- LDM -> diffusers U-Net ------------------------------------------------------------------
def _resnet_pairs(ldm: str, diffusers: str) -> list[tuple[str, str]]:
    return [(ldm + a, diffusers + b) for a, b in _RESNET_RENAMES]


def ldm_unet_key_map(config: MovingBGConfig) -> list[tuple[str, str]]:
    """``(LDM prefix, diffusers prefix)`` pairs covering every U-Net weight (without ``model.diffusion_model.``).

    Attention blocks keep their inner names; ResNet blocks are listed per sub-layer. Valid for any
    ``config.unet`` of SD1.5 block types (one ``layers_per_block`` for all levels).
    """
    down, up = config.unet["down_block_types"], config.unet["up_block_types"]
    n, per = len(down), config.layers_per_block
    pairs = [("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
             ("input_blocks.0.0.", "conv_in."), ("out.0.", "conv_norm_out."), ("out.2.", "conv_out.")]
    for level in range(n):
        for j in range(per):
            i = 1 + level * (per + 1) + j
            pairs += _resnet_pairs(f"input_blocks.{i}.0.", f"down_blocks.{level}.resnets.{j}.")
            if "CrossAttn" in down[level]:
                pairs.append((f"input_blocks.{i}.1.", f"down_blocks.{level}.attentions.{j}."))
        if level < n - 1:
            pairs.append((f"input_blocks.{(level + 1) * (per + 1)}.0.op.", f"down_blocks.{level}.downsamplers.0.conv."))
    pairs += _resnet_pairs("middle_block.0.", "mid_block.resnets.0.")
    pairs.append(("middle_block.1.", "mid_block.attentions.0."))
    pairs += _resnet_pairs("middle_block.2.", "mid_block.resnets.1.")
    for level in range(n):
        attn = "CrossAttn" in up[level]
        for j in range(per + 1):
            i = level * (per + 1) + j
            pairs += _resnet_pairs(f"output_blocks.{i}.0.", f"up_blocks.{level}.resnets.{j}.")
            if attn:
                pairs.append((f"output_blocks.{i}.1.", f"up_blocks.{level}.attentions.{j}."))
        if level < n - 1:
            i = level * (per + 1) + per
            pairs.append((f"output_blocks.{i}.{2 if attn else 1}.conv.", f"up_blocks.{level}.upsamplers.0.conv."))
    return pairs


def _rename(key: str, table: Mapping[str, str]) -> str | None:
    """Replace the longest prefix of ``key`` found in ``table`` (prefixes end with ``.``)."""
    cut = len(key)
    while True:
        cut = key.rfind(".", 0, cut)
        if cut < 0:
            return None
        head = key[:cut + 1]
        if head in table:
            return table[head] + key[cut + 1:]


def _unet2d_shapes(config: MovingBGConfig, head: bool = True) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``UNet2DConditionModel(**config.unet)`` (built on the meta device)."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config.unet_kwargs())
    shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    if not head:
        shapes = {k: s for k, s in shapes.items() if not k.startswith(_HEAD_PREFIXES)}
    return shapes


def _strip_ldm_prefix(checkpoint: Mapping[str, torch.Tensor]) -> tuple[StateDict, str]:
    """U-Net entries of a full LDM checkpoint (VAE / text encoder / EMA entries are ignored)."""
    unet = {k[len(LDM_PREFIX):]: v for k, v in checkpoint.items() if k.startswith(LDM_PREFIX)}
    if unet:
        ignored = len(checkpoint) - len(unet)
        if ignored:
            logger.debug("LDM checkpoint: ignoring %d non-U-Net entries", ignored)
        return unet, LDM_PREFIX
    if any(k.startswith("input_blocks.") for k in checkpoint):
        return dict(checkpoint), ""
    raise ValueError(f"not an LDM U-Net checkpoint: no '{LDM_PREFIX}*' keys "
                     f"(first keys: {sorted(checkpoint)[:5]})")


def _ldm_expected(config: MovingBGConfig, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """LDM key (with ``prefix``) -> shape of the base U-Net described by ``config.unet``."""
    to_ldm = {d: lk for lk, d in ldm_unet_key_map(config)}
    expected = {}
    for key, shape in _unet2d_shapes(config).items():
        ldm_key = _rename(key, to_ldm)
        if ldm_key is None:
            raise RuntimeError(f"no LDM name for diffusers key {key}")
        expected[prefix + ldm_key] = shape
    return expected


def ldm_unet_names(shapes: Mapping[str, Sequence[int]], config: MovingBGConfig,
                   what: str = "SD1.5 (LDM) U-Net") -> dict[str, str]:
    """Check an LDM-layout U-Net's keys and shapes strictly; return ``{LDM key: diffusers key}``.

    For weights that are not a plain state dict (e.g. computed one at a time): only the shapes are
    needed here. 1x1-conv ``proj_in`` / ``proj_out`` shapes are accepted where ``config`` has linear
    projections (:func:`load_spatial_unet` reshapes them).

    Args:
        shapes: LDM key WITHOUT ``model.diffusion_model.`` (``input_blocks.1.1.proj_in.weight`` ...) -> shape.
        config: the base U-Net they must match (``config.unet``).
        what: names the source in the error.

    Raises:
        WeightLayoutError: missing / unexpected / mis-shaped keys, named in LDM layout (sorted).
    """
    expected = _ldm_expected(config)
    given = {k: _conform_linear(torch.empty(tuple(s), device="meta"), expected.get(k)) for k, s in shapes.items()}
    check_state_dict(given, expected, what)
    to_diffusers = dict(ldm_unet_key_map(config))
    return {k: _rename(k, to_diffusers) for k in shapes}


def convert_ldm_unet(checkpoint: Mapping[str, torch.Tensor], config: MovingBGConfig,
                     what: str = "SD1.5 (LDM) U-Net checkpoint") -> StateDict:
    """SD1.5 LDM checkpoint (``model.diffusion_model.*``) -> ``UNet2DConditionModel`` state dict.

    Args:
        checkpoint: the whole checkpoint (e.g. ``v1-5-pruned-emaonly.safetensors``) or only its U-Net.
        config: gives the U-Net layout (``config.unet``).
        what: names the source in the error.

    Raises:
        WeightLayoutError: missing / unexpected / wrongly shaped U-Net keys, named in LDM layout.
    """
    unet_sd, prefix = _strip_ldm_prefix(checkpoint)
    expected = _ldm_expected(config, prefix)
    given = {prefix + k: _conform_linear(v, expected.get(prefix + k)) for k, v in unet_sd.items()}
    check_state_dict(given, expected, what)
    to_diffusers = dict(ldm_unet_key_map(config))
    return {_rename(k, to_diffusers): given[prefix + k] for k in unet_sd}


def _conform_linear(value: torch.Tensor, shape: tuple[int, ...] | None) -> torch.Tensor:
    """1x1-conv ``proj_in`` / ``proj_out`` (``[C, C, 1, 1]``) -> linear ``[C, C]`` when expected."""
    if shape is not None and len(shape) == 2 and value.ndim == 4 and tuple(value.shape[2:]) == (1, 1):
        return value[:, :, 0, 0]
    return value


def load_spatial_unet(model: MovingBGModel,
                      weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]], *,
                      denoising: bool = True, reference: bool = True, what: str = "base U-Net") -> int:
    """Overwrite, in place, the spatial weights of ``model``'s denoising and/or reference U-Net.

    ``weights`` is a base U-Net in diffusers ``UNet2DConditionModel`` layout (``config.unet``: 4 input
    channels, with output head), e.g. from :func:`convert_ldm_unet` or, one tensor at a time, from
    :func:`ldm_unet_names`; an iterable of ``(key, tensor)`` is consumed once, so only one source
    tensor needs to exist at a time. What stays as it is: the motion modules, the motion encoders, and
    the condition-concatenation input channels of the denoising ``conv_in`` (only its first
    ``config.latent_channels`` input channels are replaced; its bias is). The reference U-Net has no
    output head, so ``conv_norm_out.*`` / ``conv_out.*`` only go to the denoising U-Net. Values are cast
    to the model's dtype and device.

    Args:
        model: the model to update (in place; on error it may be partly updated -- discard it).
        weights: every key of the base U-Net exactly once.
        denoising: write into the denoising U-Net (``UNetMotionModel``, spatial part).
        reference: write into the reference U-Net.
        what: names the source in the error.

    Returns:
        the number of tensors written.

    Raises:
        ValueError: neither target, or ``reference`` on a model without a reference U-Net.
        WeightLayoutError: missing / unexpected / mis-shaped keys (diffusers names).
    """
    if not (denoising or reference):
        raise ValueError("load_spatial_unet: choose the denoising U-Net, the reference U-Net or both")
    if reference and model.reference_unet is None:
        raise ValueError("this MovingBGModel has no reference U-Net (built with use_reference=False)")
    config = model.config
    expected = _unet2d_shapes(config)
    den = model.denoising_unet.state_dict(keep_vars=True) if denoising else {}
    ref = model.reference_unet.state_dict(keep_vars=True) if reference else {}
    seen: set[str] = set()
    unexpected: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    written = 0
    items = weights.items() if isinstance(weights, Mapping) else weights
    with torch.no_grad():
        for key, value in items:
            shape = expected.get(key)
            if shape is None or key in seen:
                unexpected.append(key)
                continue
            seen.add(key)
            value = _conform_linear(value, shape)
            if tuple(value.shape) != shape:
                mismatched.append((key, tuple(value.shape), shape))
                continue
            targets = []
            if denoising:
                target = den[key]
                if key == "conv_in.weight":
                    target = target[:, :config.latent_channels]
                targets.append(target)
            if reference and not key.startswith(_HEAD_PREFIXES):
                targets.append(ref[key])
            for target in targets:
                if tuple(target.shape) != shape:
                    raise RuntimeError(f"{key}: model tensor {tuple(target.shape)} differs from the base U-Net {shape}")
                target.copy_(value)
                written += 1
    missing = sorted(set(expected) - seen)
    if missing or unexpected or mismatched:
        raise WeightLayoutError(what, missing, sorted(unexpected), sorted(mismatched))
    return written


# ---- AnimateDiff -> diffusers motion modules ---------------------------------------------------
_AD_BLOCK = re.compile(r"^(.*\.motion_modules\.\d+\.)temporal_transformer\.(.*)$")
_DF_BLOCK = re.compile(r"^(.*\.motion_modules\.\d+\.)(.*)$")
_AD_TO_DF = (("attention_blocks.0.", "attn1."), ("attention_blocks.1.", "attn2."),
             ("norms.0.", "norm1."), ("norms.1.", "norm2."), ("ff_norm.", "norm3."))
_BLOCK_REST = re.compile(r"^(transformer_blocks\.\d+\.)(.*)$")
_PE_REST = re.compile(r"^(transformer_blocks\.\d+\.)attention_blocks\.([01])\.pos_encoder\.pe$")


def _swap_block_names(rest: str, pairs: tuple[tuple[str, str], ...]) -> str:
    """Rename the layer right after ``transformer_blocks.k.`` (``attn1`` <-> ``attention_blocks.0`` ...)."""
    m = _BLOCK_REST.match(rest)
    if m is None:
        return rest
    block, inner = m.groups()
    for old, new in pairs:
        if inner.startswith(old):
            return block + new + inner[len(old):]
    return rest


def animatediff_to_diffusers_key(key: str) -> str | None:
    """AnimateDiff motion key -> diffusers key; None for keys without a diffusers counterpart.

    ``pos_encoder.pe`` of ``attention_blocks.0`` maps to ``pos_embed.pe``; that of
    ``attention_blocks.1`` to None (diffusers shares one position encoding per block).
    """
    m = _AD_BLOCK.match(key)
    if m is None:
        return None
    head, rest = m.groups()
    pe = _PE_REST.match(rest)
    if pe is not None:
        return None if pe.group(2) == "1" else f"{head}{pe.group(1)}pos_embed.pe"
    return head + _swap_block_names(rest, _AD_TO_DF)


def diffusers_to_animatediff_key(key: str) -> list[str]:
    """Diffusers motion key -> the AnimateDiff key(s) it comes from (``pos_embed.pe`` -> two)."""
    m = _DF_BLOCK.match(key)
    if m is None:
        raise ValueError(f"not a motion-module key: {key}")
    head, rest = m.groups()
    if rest.endswith(".pos_embed.pe"):
        block = rest[: -len("pos_embed.pe")]
        return [f"{head}temporal_transformer.{block}attention_blocks.{i}.pos_encoder.pe" for i in (0, 1)]
    return [f"{head}temporal_transformer.{_swap_block_names(rest, tuple((b, a) for a, b in _AD_TO_DF))}"]


def _motion_shapes(config: MovingBGConfig) -> dict[str, tuple[int, ...]]:
    """Diffusers motion-module key -> shape for ``config``."""
    denoising = empty_model(config.replace(use_reference=False, use_fg=False, use_bg=False)).denoising_unet
    return {k: tuple(v.shape) for k, v in denoising.state_dict().items() if ".motion_modules." in k}


def _mid_block_hint(missing: list[str], unexpected: list[str]) -> str:
    if any(k.startswith("mid_block.") for k in missing) and not any(k.startswith("mid_block.") for k in unexpected):
        return ("Hint: the file has no mid-block motion module (AnimateDiff v3); build the config with "
                "motion=MotionModuleConfig(use_mid_block=False).")
    if any(k.startswith("mid_block.") for k in unexpected) and not any(k.startswith("mid_block.") for k in missing):
        return "Hint: the file has a mid-block motion module (AnimateDiff v2); set use_mid_block=True."
    return ""


def convert_animatediff_motion(motion_sd: Mapping[str, torch.Tensor], config: MovingBGConfig) -> StateDict:
    """AnimateDiff motion module (``mm_sd_v15_v2.ckpt`` / v3 / Moore ``motion_module.pth``) -> diffusers.

    Returns:
        ``{down_blocks.i.motion_modules.j.* | mid_block.motion_modules.0.* | up_blocks...}`` in the
        ``UNetMotionModel`` / ``MotionAdapter`` layout.

    Raises:
        WeightLayoutError: missing / unexpected / wrongly shaped keys (AnimateDiff names).
        ValueError: the two position encodings of a block differ.
    """
    shapes = _motion_shapes(config)
    expected = {ad: shape for key, shape in shapes.items() for ad in diffusers_to_animatediff_key(key)}
    try:
        check_state_dict(motion_sd, expected, "AnimateDiff motion module")
    except WeightLayoutError as err:
        hint = _mid_block_hint(err.missing, err.unexpected)
        raise WeightLayoutError(err.what, err.missing, err.unexpected, err.mismatched, hint) from None
    out = {}
    for key, value in motion_sd.items():
        if key.endswith("attention_blocks.1.pos_encoder.pe"):
            twin = key.replace("attention_blocks.1.pos_encoder", "attention_blocks.0.pos_encoder")
            if value.is_meta or motion_sd[twin].is_meta:  # layout-only (dry-run) conversion
                continue
            if not torch.allclose(value.float(), motion_sd[twin].float(), atol=1e-6):
                raise ValueError(f"{key} differs from {twin}; diffusers shares one position encoding per block")
            continue
        new = animatediff_to_diffusers_key(key)
        if new is None:
            raise RuntimeError(f"no diffusers name for motion key {key}")
        out[new] = value
    if set(out) != set(shapes):
        raise RuntimeError(f"motion conversion produced wrong keys: {sorted(set(out) ^ set(shapes))[:10]}")
    return out


# ---- assembling a model -------------------------------------------------------------------------
def _expand_conv_in(unet_sd: StateDict, config: MovingBGConfig) -> StateDict:
    """Zero-pad ``conv_in.weight`` from 4 to ``config.in_channels`` input channels (if needed)."""
    weight = unet_sd.get("conv_in.weight")
    if weight is None or weight.ndim != 4 or weight.shape[1] != config.latent_channels:
        return unet_sd
    if config.in_channels == config.latent_channels:
        return unet_sd
    extra = weight.new_zeros(weight.shape[0], config.in_channels - weight.shape[1], *weight.shape[2:])
    return {**unet_sd, "conv_in.weight": torch.cat([weight, extra], dim=1)}


def _part(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, tuple[int, ...]]:
    return {k[len(prefix):]: tuple(v.shape) for k, v in state.items() if k.startswith(prefix)}


def _fresh_encoder(config: MovingBGConfig) -> StateDict:
    enc = MotionEncoder(config.encoder_in_channels, config.encoder_channels, config.encoder_out_channels)
    return dict(enc.state_dict())


def _denoising_part(unet_sd: Mapping[str, torch.Tensor], motion_sd: Mapping[str, torch.Tensor],
                    config: MovingBGConfig, expected: Mapping[str, tuple[int, ...]]) -> StateDict:
    spatial = {k: s for k, s in expected.items() if ".motion_modules." not in k}
    motion = {k: s for k, s in expected.items() if ".motion_modules." in k}
    unet_sd = _expand_conv_in(dict(unet_sd), config)
    check_state_dict(unet_sd, spatial, "denoising U-Net (UNet2DConditionModel keys)")
    check_state_dict(motion_sd, motion, "motion modules (diffusers keys)", _mid_block_hint(
        sorted(set(motion) - set(motion_sd)), sorted(set(motion_sd) - set(motion))))
    return {**unet_sd, **motion_sd}


def _reference_part(reference_sd: Mapping[str, torch.Tensor],
                    expected: Mapping[str, tuple[int, ...]]) -> StateDict:
    head = sorted(k for k in reference_sd if k.startswith(_HEAD_PREFIXES))
    if head:
        logger.debug("reference U-Net: dropping its unused output head %s", head)
    ref = {k: v for k, v in reference_sd.items() if not k.startswith(_HEAD_PREFIXES)}
    check_state_dict(ref, expected, "reference U-Net (UNet2DConditionModel keys, no output head)")
    return ref


def build_model_from_diffusers(
    denoising_unet_sd: Mapping[str, torch.Tensor],
    reference_unet_sd: Mapping[str, torch.Tensor] | None,
    motion_sd: Mapping[str, torch.Tensor],
    config: MovingBGConfig,
    *,
    fg_encoder_sd: Mapping[str, torch.Tensor] | None = None,
    bg_encoder_sd: Mapping[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> MovingBGModel:
    """Assemble a :class:`MovingBGModel` from diffusers-layout parts (strict, no random init of loaded parts).

    Args:
        denoising_unet_sd: ``UNet2DConditionModel`` keys (``conv_in`` with 4 or ``config.in_channels``
            input channels; 4 is zero-padded).
        reference_unet_sd: ``UNet2DConditionModel`` keys with or without the output head (it is
            dropped); required when ``config.use_reference``.
        motion_sd: ``MotionAdapter`` / ``UNetMotionModel`` motion keys (see :func:`convert_animatediff_motion`).
        config: the architecture.
        fg_encoder_sd: pose-guider keys (``conv_in``, ``blocks.*``, ``conv_out``); None = fresh (zero output).
        bg_encoder_sd: same for the background encoder; None = fresh (zero output).
        dtype: cast all floating tensors to this dtype (default: the dtype of the denoising U-Net's
            ``conv_in.weight``, so e.g. an fp16 motion module joins an fp32 U-Net as fp32).

    Raises:
        WeightLayoutError: a part's keys or shapes do not match; the message lists them.
    """
    if dtype is None and "conv_in.weight" in denoising_unet_sd:
        dtype = denoising_unet_sd["conv_in.weight"].dtype
    expected = empty_model(config).state_dict()
    state = {f"denoising_unet.{k}": v for k, v in _denoising_part(
        denoising_unet_sd, motion_sd, config, _part(expected, "denoising_unet.")).items()}
    if config.use_reference:
        if reference_unet_sd is None:
            raise ValueError("config.use_reference is set but no reference U-Net weights were given")
        ref = _reference_part(reference_unet_sd, _part(expected, "reference_unet."))
        state.update({f"reference_unet.{k}": v for k, v in ref.items()})
    encoders = (("fg_encoder", config.use_fg, fg_encoder_sd), ("bg_encoder", config.use_bg, bg_encoder_sd))
    for name, flag, given in encoders:
        if not flag:
            continue
        part = dict(given) if given is not None else _fresh_encoder(config)
        check_state_dict(part, _part(expected, f"{name}."), f"{name} (pose-guider keys)")
        state.update({f"{name}.{k}": v for k, v in part.items()})
    return model_from_state_dict(config, state, dtype=dtype)


def build_bundle_from_ldm(
    ckpt_sd: Mapping[str, torch.Tensor],
    motion_sd: Mapping[str, torch.Tensor],
    config: MovingBGConfig,
    *,
    pose_guider_sd: Mapping[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> MovingBGModel:
    """Model initialised from an SD1.5 LDM checkpoint (both U-Nets) + AnimateDiff motion module.

    Args:
        ckpt_sd: LDM checkpoint state dict (``model.diffusion_model.*``; other entries ignored).
        motion_sd: AnimateDiff motion-module state dict (v2 with mid block, or v3 with
            ``config.motion.use_mid_block=False``).
        config: architecture (``config.unet`` must describe the checkpoint's U-Net).
        pose_guider_sd: optional pose-guider weights for the foreground encoder.
        dtype: cast floating tensors (default: the U-Net checkpoint's dtype).
    """
    unet = convert_ldm_unet(ckpt_sd, config)
    reference = None
    if config.use_reference:
        reference = {k: v.clone() for k, v in unet.items() if not k.startswith(_HEAD_PREFIXES)}
    motion = convert_animatediff_motion(motion_sd, config)
    return build_model_from_diffusers(unet, reference, motion, config, fg_encoder_sd=pose_guider_sd, dtype=dtype)


def build_bundle_from_moore(
    denoising_sd: Mapping[str, torch.Tensor],
    reference_sd: Mapping[str, torch.Tensor],
    pose_guider_sd: Mapping[str, torch.Tensor],
    motion_sd: Mapping[str, torch.Tensor],
    config: MovingBGConfig,
    *,
    dtype: torch.dtype | None = None,
) -> MovingBGModel:
    """Model initialised from Moore-AnimateAnyone's four files.

    Args:
        denoising_sd: ``denoising_unet.pth`` (stock ``UNet2DConditionModel`` keys, 686 for SD1.5).
        reference_sd: ``reference_unet.pth`` (same keys minus ``conv_norm_out.*`` / ``conv_out.*``).
        pose_guider_sd: ``pose_guider.pth`` -> foreground encoder.
        motion_sd: ``motion_module.pth`` (AnimateDiff v2 keys, 588 for SD1.5).
        config: architecture (:meth:`MovingBGConfig.sd15` for the real files).
        dtype: cast floating tensors (default: the dtype of ``denoising_sd``).
    """
    motion = convert_animatediff_motion(motion_sd, config)
    return build_model_from_diffusers(denoising_sd, reference_sd, motion, config,
                                      fg_encoder_sd=pose_guider_sd, dtype=dtype)
