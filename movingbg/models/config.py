"""Configuration of the MovingBG network (frozen, JSON-serialisable).

The network is an SD1.5-style U-Net with AnimateDiff motion modules (the denoising U-Net), a second
plain U-Net (the reference U-Net, "global features"), and two small motion encoders (foreground on
pose renders, background on track maps). :class:`MovingBGConfig` describes all of it; the base U-Net
is given as a ``UNet2DConditionModel`` keyword dict (4 latent channels), from which the denoising
U-Net (with ``4 + 4 + 1`` input channels when condition concatenation is on) and the reference U-Net
are derived.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

__all__ = ["FrozenMapping", "MotionModuleConfig", "MovingBGConfig", "SD15_UNET", "TINY_UNET"]

SD15_UNET: Mapping[str, Any] = types.MappingProxyType({
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "use_linear_projection": False,
})
"""Stable Diffusion 1.5 U-Net (``UNet2DConditionModel`` keyword arguments)."""

TINY_UNET: Mapping[str, Any] = types.MappingProxyType({
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "attention_head_dim": 8,
    "cross_attention_dim": 32,
    "norm_num_groups": 8,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "use_linear_projection": False,
})
"""A few-hundred-kB U-Net with the same block structure as SD1.5 (for tests)."""

_DOWN_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
_UP_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")

# UNet2DConditionModel options that UNetMotionModel does not implement: they must keep these values,
# otherwise the denoising U-Net (UNetMotionModel) and the reference U-Net would silently differ.
_FIXED_UNET_OPTIONS: Mapping[str, Any] = types.MappingProxyType({
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "only_cross_attention": False,
    "dual_cross_attention": False,
    "upcast_attention": False,
    "resnet_time_scale_shift": "default",
    "time_embedding_type": "positional",
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "class_embed_type": None,
    "addition_embed_type": None,
    "num_class_embeds": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "time_cond_proj_dim": None,
    "cross_attention_norm": None,
    "attention_type": "default",
    "reverse_transformer_layers_per_block": None,
})


class FrozenMapping(Mapping[str, Any]):
    """Read-only, hashable, picklable / deep-copyable mapping (for config dicts in frozen dataclasses)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] = ()) -> None:
        object.__setattr__(self, "_data", dict(data))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._data.items())))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenMapping is read-only")

    def __reduce__(self):
        return (FrozenMapping, (self._data,))

    def __repr__(self) -> str:
        return f"FrozenMapping({self._data!r})"


def _freeze(value: Any) -> Any:
    """Lists become tuples and dicts FrozenMappings (recursively): configs compare equal after JSON."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return FrozenMapping({str(k): _freeze(v) for k, v in value.items()})
    return value


def _thaw(value: Any) -> Any:
    """Inverse of :func:`_freeze` for JSON: tuples become lists, mappings plain dicts."""
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class MotionModuleConfig:
    """AnimateDiff temporal motion modules (one after every spatial block).

    Attributes:
        num_attention_heads: heads of every temporal attention (AnimateDiff: 8).
        max_seq_length: length of the sinusoidal position encoding = most frames per clip (32).
        use_mid_block: a motion module in the mid block too (v2: yes; v3: no).
        transformer_layers_per_block: temporal transformer layers per motion module (1).
    """

    num_attention_heads: int = 8
    max_seq_length: int = 32
    use_mid_block: bool = True
    transformer_layers_per_block: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != "use_mid_block" and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"MotionModuleConfig.{f.name} must be a positive int, got {v!r}")


@dataclass(frozen=True)
class MovingBGConfig:
    """Everything needed to build a :class:`~movingbg.models.generator.MovingBGModel`.

    Attributes:
        unet: ``UNet2DConditionModel`` keyword arguments of the BASE U-Net (4 latent in/out channels,
            SD1.5-style block types only). Stored read-only; the denoising U-Net derives from it.
        motion: temporal motion modules of the denoising U-Net.
        encoder_in_channels: channels of the pose renders / track maps (RGB: 3).
        encoder_channels: pose-guider widths; ``len - 1`` stride-2 stages, so the encoders downsample
            by ``2 ** (len - 1)`` (8 = the VAE factor with the default ``(16, 32, 96, 256)``).
        use_fg: build the foreground (pose) encoder.
        use_bg: build the background (track) encoder.
        use_reference: build the reference U-Net and the reference attention.
        use_concat: condition concatenation: the denoising U-Net takes ``4 + 4 + 1`` channels.
        prediction_type: what the weights predict, ``"epsilon"`` or ``"v_prediction"`` (public
            human-animation weights, e.g. Moore-AnimateAnyone, use v-prediction with zero-SNR).
        beta_schedule: training noise schedule, ``"linear"`` or ``"scaled_linear"`` (0.00085..0.012).
        vae_scale_factor: latent scale of the VAE the model was trained with (SD1.5: 0.18215).
        track_trail: how the track maps this model reads are drawn: each track's previous
            ``track_trail`` positions as a line fading with age behind its disc (MovingBG Render Tracks
            ``trail``; 0 = discs only), so a map also shows where each point came from. Inference maps
            must be drawn with the same value (Render Tracks does, with the model connected).
    """

    unet: Mapping[str, Any] = field(default_factory=lambda: dict(SD15_UNET))
    motion: MotionModuleConfig = field(default_factory=MotionModuleConfig)
    encoder_in_channels: int = 3
    encoder_channels: tuple[int, ...] = (16, 32, 96, 256)
    use_fg: bool = True
    use_bg: bool = True
    use_reference: bool = True
    use_concat: bool = True
    prediction_type: str = "v_prediction"
    beta_schedule: str = "linear"
    vae_scale_factor: float = 0.18215
    track_trail: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "unet", _freeze(dict(self.unet)))
        object.__setattr__(self, "encoder_channels", tuple(int(c) for c in self.encoder_channels))
        if isinstance(self.motion, Mapping):
            object.__setattr__(self, "motion", MotionModuleConfig(**self.motion))
        self._validate()

    def _validate(self) -> None:
        u = self.unet
        for key in ("down_block_types", "up_block_types", "block_out_channels", "cross_attention_dim"):
            if key not in u:
                raise ValueError(f"MovingBGConfig.unet must set {key!r}")
        n = len(u["block_out_channels"])
        if len(u["down_block_types"]) != n or len(u["up_block_types"]) != n:
            raise ValueError("unet down_block_types / up_block_types / block_out_channels differ in length")
        bad = [t for t in u["down_block_types"] if t not in _DOWN_TYPES]
        bad += [t for t in u["up_block_types"] if t not in _UP_TYPES]
        if bad:
            raise ValueError(f"unsupported U-Net block types {bad}; use {_DOWN_TYPES} / {_UP_TYPES}")
        if not isinstance(u.get("layers_per_block", 2), int):
            raise ValueError("unet layers_per_block must be one int (per-block tuples are not supported)")
        if not isinstance(u["cross_attention_dim"], int):
            raise ValueError("unet cross_attention_dim must be one int")
        for key, expected in _FIXED_UNET_OPTIONS.items():
            if key in u and u[key] != expected:
                raise ValueError(f"unet option {key}={u[key]!r} is not supported (must be {expected!r})")
        if u.get("in_channels", 4) != u.get("out_channels", 4):
            raise ValueError("unet in_channels must equal out_channels (latent channels)")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {self.prediction_type!r}")
        if self.beta_schedule not in ("linear", "scaled_linear"):
            raise ValueError(f"beta_schedule must be 'linear' or 'scaled_linear', got {self.beta_schedule!r}")
        if not float(self.vae_scale_factor) > 0:
            raise ValueError(f"vae_scale_factor must be > 0, got {self.vae_scale_factor!r}")
        if len(self.encoder_channels) < 2 or min(self.encoder_channels) < 1:
            raise ValueError(f"encoder_channels must have >= 2 positive widths, got {self.encoder_channels}")
        if isinstance(self.track_trail, bool) or not isinstance(self.track_trail, int) or self.track_trail < 0:
            raise ValueError(f"track_trail must be an int >= 0 (frames), got {self.track_trail!r}")

    # ---- derived quantities -------------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        """Channels of the VAE latent (4 for SD1.5)."""
        return int(self.unet.get("in_channels", 4))

    @property
    def in_channels(self) -> int:
        """Input channels of the denoising U-Net: ``latent (+ condition latent + first-frame mask)``."""
        return 2 * self.latent_channels + 1 if self.use_concat else self.latent_channels

    @property
    def cross_attention_dim(self) -> int:
        """Width of the CLIP image embedding the cross-attention reads (768 for SD1.5)."""
        return int(self.unet["cross_attention_dim"])

    @property
    def block_out_channels(self) -> tuple[int, ...]:
        return tuple(self.unet["block_out_channels"])

    @property
    def layers_per_block(self) -> int:
        return int(self.unet.get("layers_per_block", 2))

    @property
    def encoder_out_channels(self) -> int:
        """Channels of the motion-encoder features = the denoising U-Net's ``conv_in`` output."""
        return self.block_out_channels[0]

    @property
    def encoder_downscale(self) -> int:
        """Pixel-to-latent factor of the motion encoders (8 by default)."""
        return 2 ** (len(self.encoder_channels) - 1)

    def unet_kwargs(self) -> dict[str, Any]:
        """Plain ``UNet2DConditionModel(**kwargs)`` arguments of the base / reference U-Net."""
        return _thaw(self.unet)

    # ---- presets -------------------------------------------------------------------------------
    @classmethod
    def sd15(cls, **overrides: Any) -> MovingBGConfig:
        """Full-size model: SD1.5 U-Nets, AnimateDiff v2 motion modules, pose-guider encoders."""
        return cls(**{"unet": dict(SD15_UNET), **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> MovingBGConfig:
        """Test-size model (3 levels of 32/64/64 channels, cross-attention width 32)."""
        return cls(**{"unet": dict(TINY_UNET), **overrides})

    def replace(self, **changes: Any) -> MovingBGConfig:
        """A copy with some fields changed, e.g. ``cfg.replace(use_bg=False)`` for an ablation."""
        return replace(self, **changes)

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (lists instead of tuples)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["motion"] = asdict(self.motion)
        return _thaw(d)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MovingBGConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MovingBGConfig keys {unknown}")
        data = dict(data)
        if "motion" in data:
            m = dict(data["motion"])
            unknown_m = sorted(set(m) - {f.name for f in fields(MotionModuleConfig)})
            if unknown_m:
                raise ValueError(f"unknown MotionModuleConfig keys {unknown_m}")
            data["motion"] = MotionModuleConfig(**m)
        return cls(**data)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MovingBGConfig:
        return cls.from_dict(json.loads(text))
