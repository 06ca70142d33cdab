"""Training configuration: a frozen dataclass read from JSON or YAML, checked before anything heavy runs.

Example (JSON; YAML with the same keys works when PyYAML is installed)::

    {
      "data_dir": "cache/",                 # python -m movingbg.prepare VIDEOS cache/
      "output_dir": "runs/first",
      "vae": "sd-vae-ft-mse/",              # diffusers AutoencoderKL folder or .safetensors
      "init": "moore", "init_path": "pretrained_weights/",
      "clip_encoder": "sd-image-variations-diffusers/image_encoder",
      "clip_length": 24, "width": 448, "height": 640,
      "learning_rate": 1e-5, "batch_size": 1, "max_steps": 30000,
      "gradient_checkpointing": true, "mixed_precision": "fp16"
    }

Every field is documented on :class:`TrainConfig`. Paths are used as written (relative ones from the
working directory).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from ..models.config import MovingBGConfig

__all__ = ["TrainConfig", "load_config", "MAX_CLIP_LENGTH"]

MAX_CLIP_LENGTH = 32
"""The paper trains and samples clips of at most 32 frames."""

_INITS = ("none", "bundle", "moore", "ldm")
_PRECISIONS = ("no", "fp16", "bf16")
_EXPORT_DTYPES = ("fp16", "bf16", "fp32")
_PROBS = ("blank_condition_prob", "drop_joint_prob", "drop_clip_prob", "drop_reference_prob", "high_noise_prob")
NUM_TRAIN_TIMESTEPS = 1000
"""Timesteps of the training noise schedule (``t`` in ``0..999``)."""
_POSITIVE_INTS = ("clip_length", "frame_stride", "width", "height", "batch_size", "max_steps",
                  "gradient_accumulation_steps", "checkpoint_every", "keep_last", "log_every", "sample_steps",
                  "vae_chunk")
_NON_NEGATIVE_INTS = ("lr_warmup_steps", "seed", "num_workers", "sample_every", "track_radius", "torch_threads")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs.

    Data and output:
        data_dir: cache folder written by ``python -m movingbg.prepare``.
        output_dir: checkpoints (``checkpoints/step-XXXXXXXX``), samples, logs and the exported bundle.

    Model and frozen encoders:
        model: architecture: ``"sd15"``, ``"tiny"``, a :class:`MovingBGConfig` dict, or a path to its
            JSON. None = the bundle's own config with ``init="bundle"``, else ``"sd15"``.
        init: where the weights start: ``"none"`` (random; encoders and concat channels zero),
            ``"bundle"`` (a MovingBG bundle), ``"moore"`` (Moore-AnimateAnyone folder), ``"ldm"`` (SD1.5
            checkpoint for both U-Nets + AnimateDiff motion module).
        init_path: bundle file / Moore folder / LDM checkpoint.
        reset_encoders: with ``init="bundle"``, motion encoders to start afresh (``["bg"]``, ``["fg"]``
            or both): random inner layers and a zero output layer, adding nothing until trained. For an
            encoder that does not hear its maps (the probe's encoder response ~0, so no gradient teaches it):
            the miniature model's track encoder, built before the Kaiming init (README, Miniature reproduction).
        init_motion: AnimateDiff motion module (``init="ldm"``).
        init_pose_guider: optional pose guider for the foreground encoder (``init="ldm"``).
        vae: diffusers ``AutoencoderKL`` folder (``config.json`` + weights) or one ``.safetensors`` /
            ``.ckpt`` (diffusers or original LDM keys, SD layout); frozen, latents scaled by the model's
            ``vae_scale_factor``.
        clip_encoder: transformers ``CLIPVisionModelWithProjection`` folder giving ``image_embeds`` of the
            reference (its projection size must equal the model's cross-attention width); None = zero
            embeddings (tiny models, or no CLIP).
        vae_chunk: frames per VAE encoder call (memory).
        cache_latents: encode every cached frame once and keep its latent (posterior mean and std for
            an ``AutoencoderKL``; sampling with the per-sample noise stays exact) in the training
            process's memory instead of encoding each sample's frames at every step. Same losses,
            far fewer VAE calls; costs ``frames x 2 x C x H/8 x W/8 x 4`` bytes of RAM (the miniature
            reproduction: 6 MB; 300 k frames at 512 x 768: 117 GB, so leave it off for big datasets).
        latent_cache_dir: with ``cache_latents``, also keep the latents on disk in this folder (one
            safetensors file per video, under a subfolder named by the VAE weights' fingerprint and the
            training size): before the first step every process encodes its share of the missing videos,
            and a resumed run, the other processes and later runs with the same VAE and size read them
            instead of encoding again. None = in memory only.

    Samples:
        clip_length: frames per training clip, 2..32 (and at most the motion modules' length).
        frame_stride: take every n-th cached frame inside a clip.
        width, height: training resolution (frames are scaled to cover it, then centre-cropped);
            multiples of 8 x the U-Net's total downsampling.
        tracks_range: ``(low, high)`` number of background tracks drawn per sample (paper: 5..50).
        track_radius: disc radius of the rendered track maps (0 = ``max(2, round(min(H, W) / 128))``,
            the inference default).
        anchor_tracks: draw the tracks only among those visible in the clip's first frame (its condition
            frame), as a tracker queried on that frame gives them at inference; false = among all tracks seen
            anywhere in the clip (short tracks re-seeded mid-clip, e.g. KLT's, then have no counterpart in
            the condition frame).
        track_trail: None = the model's ``MovingBGConfig.track_trail``; an int >= 0 sets it (and the
            exported bundle records it). Each track map also draws the track's previous ``track_trail``
            positions (every ``frame_stride`` cached frames, frames before the clip included) as a line
            fading with age, so a map shows where its points came from, not only where they are.
        blank_condition_prob: the condition frame (the clip's first frame, concatenated) is blank.
        drop_joint_prob: CLIP embedding and reference features are dropped together (the CFG
            unconditional branch at inference).
        drop_joint_includes_condition: the joint drop also blanks the condition frame.
        drop_clip_prob, drop_reference_prob: extra independent drops of each, decided per sample
            (a dropped reference = that sample attends without the bank, in the same batched forward).

    Optimisation:
        learning_rate: AdamW learning rate (> 0; paper 1e-5); lr_warmup_steps: linear warm-up.
        adam_beta1, adam_beta2, adam_epsilon, weight_decay: AdamW settings.
        max_grad_norm: gradient clipping (0 = off).
        batch_size: samples per process and micro-step; gradient_accumulation_steps: micro-steps per
            optimizer step (global batch = batch_size x accumulation x processes).
        max_steps: optimizer steps.
        mixed_precision: ``"no"``, ``"fp16"`` or ``"bf16"`` (through accelerate).
        gradient_checkpointing: recompute U-Net activations in the backward pass.
        ema_decay: exponential moving average of the trained weights (0 = off, e.g. 0.9999); the
            export uses it.
        freeze: ``fnmatch`` patterns of parameter names not to train (e.g. ``"reference_unet.*"``);
            the VAE and CLIP encoder are always frozen.
        zero_snr: rescale the noise schedule to zero terminal SNR (None: on for v-prediction).
        high_noise_prob, high_noise_min: with probability ``high_noise_prob`` a sample's timestep is
            drawn from ``high_noise_min..999`` instead of ``0..999`` (0 = the plain uniform draw). At
            high noise the noisy latent hardly shows the motion, so the condition frame and the track
            maps must carry it; training at that end (t = 999 only) is what first made the miniature
            model read its background tracks (README, Miniature reproduction).
        find_unused_parameters: DDP option; needed when parts may be unused in a step (dropped
            reference features), so on by default.
        seed: seeds the data order, augmentation, noise and timesteps (identical runs for one seed).

    Checkpoints, logs, export:
        checkpoint_every: save every this many optimizer steps (and at the end); keep_last: keep
            the newest N.
        resume: ``"auto"`` (newest checkpoint in ``output_dir``, if any), ``"none"``, or a path.
        log_every: log loss / lr every N steps; tensorboard: write TensorBoard events (skipped with
            a warning when tensorboard is not installed); progress: tqdm bar on the main process.
        sample_every: write a sample video every N steps (0 = never); sample_steps, sample_cfg: its
            sampler steps and guidance.
        export_name: bundle written at the end into ``export_dir`` (default ``output_dir``; e.g.
            ``ComfyUI/models/movingbg`` so that MovingBG Load Model lists it); export_dtype: its precision.
        num_workers: data-loader worker processes per training process.
        torch_threads: ``torch.set_num_threads`` (0 = leave as is).
    """

    data_dir: str
    output_dir: str
    vae: str
    model: Any = None
    init: str = "none"
    init_path: Optional[str] = None
    reset_encoders: tuple[str, ...] = ()
    init_motion: Optional[str] = None
    init_pose_guider: Optional[str] = None
    clip_encoder: Optional[str] = None
    vae_chunk: int = 8
    cache_latents: bool = False
    latent_cache_dir: Optional[str] = None
    clip_length: int = 24
    frame_stride: int = 1
    width: int = 448
    height: int = 640
    tracks_range: tuple[int, int] = (5, 50)
    track_radius: int = 0
    anchor_tracks: bool = False
    track_trail: Optional[int] = None
    blank_condition_prob: float = 0.1
    drop_joint_prob: float = 0.1
    drop_joint_includes_condition: bool = False
    drop_clip_prob: float = 0.0
    drop_reference_prob: float = 0.0
    learning_rate: float = 1e-5
    lr_warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_steps: int = 10000
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    ema_decay: float = 0.0
    freeze: tuple[str, ...] = ()
    zero_snr: Optional[bool] = None
    high_noise_prob: float = 0.0
    high_noise_min: int = 800
    find_unused_parameters: bool = True
    seed: int = 0
    checkpoint_every: int = 500
    keep_last: int = 3
    resume: str = "auto"
    log_every: int = 10
    tensorboard: bool = False
    progress: bool = True
    sample_every: int = 0
    sample_steps: int = 20
    sample_cfg: float = 3.5
    export_name: str = "movingbg_trained.safetensors"
    export_dir: Optional[str] = None
    export_dtype: str = "fp16"
    num_workers: int = 2
    torch_threads: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.freeze, str):
            object.__setattr__(self, "freeze", (self.freeze,))
        object.__setattr__(self, "freeze", tuple(str(p) for p in self.freeze))
        if isinstance(self.model, Mapping):
            try:
                object.__setattr__(self, "model", MovingBGConfig.from_dict(self.model))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"model: not a valid MovingBGConfig: {exc}") from exc
        self._check_values()

    # ---- value checks (no file access) ---------------------------------------------------------
    def _check_values(self) -> None:
        for name in ("data_dir", "output_dir", "vae"):
            if not isinstance(getattr(self, name), (str, os.PathLike)) or not str(getattr(self, name)):
                raise ValueError(f"{name} must be a path, got {getattr(self, name)!r}")
        for name in _POSITIVE_INTS:
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        for name in _NON_NEGATIVE_INTS:
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an int >= 0, got {getattr(self, name)!r}")
        if not 2 <= self.clip_length <= MAX_CLIP_LENGTH:
            raise ValueError(f"clip_length must be in 2..{MAX_CLIP_LENGTH} (the motion modules see at most "
                             f"{MAX_CLIP_LENGTH} frames), got {self.clip_length}")
        if not _finite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        for name in _PROBS:
            if not _finite(getattr(self, name)) or not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)!r}")
        self._check_choices()
        self._check_optimiser()
        low_high = tuple(self.tracks_range)
        if len(low_high) != 2 or not all(_is_int(v) for v in low_high) or not 0 <= low_high[0] <= low_high[1]:
            raise ValueError(f"tracks_range must be (low, high) ints with 0 <= low <= high, got {self.tracks_range!r}")
        object.__setattr__(self, "tracks_range", low_high)
        if self.track_trail is not None and (not _is_int(self.track_trail) or self.track_trail < 0):
            raise ValueError(f"track_trail must be None (the model's) or an int >= 0 (frames), got {self.track_trail!r}")
        for name in ("cache_latents", "gradient_checkpointing", "tensorboard", "progress",
                     "find_unused_parameters", "drop_joint_includes_condition", "anchor_tracks"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.latent_cache_dir is not None:
            if not isinstance(self.latent_cache_dir, (str, os.PathLike)) or not str(self.latent_cache_dir):
                raise ValueError(f"latent_cache_dir must be a folder path or null, got {self.latent_cache_dir!r}")
            if not self.cache_latents:
                raise ValueError("latent_cache_dir is set but cache_latents is false: set cache_latents true "
                                 "(the disk cache keeps the latents that cache_latents encodes)")
        if not _is_int(self.high_noise_min) or not 0 <= self.high_noise_min < NUM_TRAIN_TIMESTEPS:
            raise ValueError(f"high_noise_min must be an int timestep in 0..{NUM_TRAIN_TIMESTEPS - 1}, "
                             f"got {self.high_noise_min!r}")
        if self.width % 8 or self.height % 8:
            raise ValueError(f"width and height must be multiples of 8, got width={self.width}, height={self.height}")

    def _check_choices(self) -> None:
        for name, allowed in (("init", _INITS), ("mixed_precision", _PRECISIONS), ("export_dtype", _EXPORT_DTYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        resets = self.reset_encoders
        if isinstance(resets, str) or not isinstance(resets, (list, tuple)) or \
                any(r not in ("fg", "bg") for r in resets) or len(set(resets)) != len(resets):
            raise ValueError(f"reset_encoders must be a list of distinct \"fg\" / \"bg\", got {resets!r}")
        object.__setattr__(self, "reset_encoders", tuple(resets))
        if resets and self.init != "bundle":
            raise ValueError(f"reset_encoders needs init=\"bundle\" (got init={self.init!r}): "
                             f"a fresh model's encoders are already new")
        if self.init != "none" and not self.init_path:
            raise ValueError(f"init_path is required with init={self.init!r}")
        if self.init == "ldm" and not self.init_motion:
            raise ValueError("init_motion (an AnimateDiff motion module) is required with init='ldm'")
        if not isinstance(self.resume, str) or not self.resume:
            raise ValueError(f"resume must be 'auto', 'none' or a checkpoint path, got {self.resume!r}")
        if not str(self.export_name).endswith(".safetensors") or Path(self.export_name).name != self.export_name:
            raise ValueError(f"export_name must be a file name ending in .safetensors, got {self.export_name!r}")
        if self.model is not None and not isinstance(self.model, (str, MovingBGConfig)):
            raise ValueError(f"model must be 'sd15', 'tiny', a MovingBGConfig dict or a JSON path, got {self.model!r}")

    def _check_optimiser(self) -> None:
        for name in ("adam_epsilon", "max_grad_norm", "weight_decay", "ema_decay", "sample_cfg"):
            if not _finite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("adam_beta1", "adam_beta2"):
            if not _finite(getattr(self, name)) or not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.ema_decay >= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay!r}")

    # ---- derived -------------------------------------------------------------------------------
    def model_config(self) -> MovingBGConfig:
        """The architecture (reads the bundle's config for ``init="bundle"`` without a ``model``).

        Raises:
            ValueError: naming ``model`` / ``init_path`` when it cannot be read or conflicts.
        """
        base = _resolve_model(self.model) if self.model is not None else None
        if self.init == "bundle":
            from ..models.bundle import read_bundle_config

            try:
                stored = read_bundle_config(self.init_path)
            except Exception as exc:  # safetensors / JSON errors of a bad file
                raise ValueError(f"init_path: cannot read the bundle config of {self.init_path}: {exc}") from exc
            if base is not None and base != stored:
                raise ValueError("model differs from the config stored in the init_path bundle; leave model unset")
            base = stored
        base = base if base is not None else MovingBGConfig.sd15()
        return base if self.track_trail is None else base.replace(track_trail=int(self.track_trail))

    def use_zero_snr(self, config: MovingBGConfig) -> bool:
        zero = (config.prediction_type == "v_prediction") if self.zero_snr is None else bool(self.zero_snr)
        if zero and config.prediction_type != "v_prediction":
            raise ValueError("zero_snr needs a v_prediction model (an epsilon model cannot learn zero SNR)")
        return zero

    def check_start(self) -> MovingBGConfig:
        """Checks that need the file system; run before anything heavy.

        Returns:
            the model config.

        Raises:
            ValueError: the message starts with the offending field name.
        """
        from ..prepare import list_prepared

        if not Path(self.data_dir).is_dir():
            raise ValueError(f"data_dir: folder not found: {self.data_dir}")
        for name in ("vae", "init_path", "init_motion", "init_pose_guider", "clip_encoder"):
            value = getattr(self, name)
            if value and not Path(value).exists():
                raise ValueError(f"{name}: not found: {value}")
        if self.resume not in ("auto", "none") and not (Path(self.resume) / "trainer_state.json").is_file():
            raise ValueError(f"resume: {self.resume} is not a finished checkpoint folder (use 'auto' or 'none')")
        config = self.model_config()
        self.use_zero_snr(config)
        if self.clip_length > config.motion.max_seq_length:
            raise ValueError(f"clip_length {self.clip_length} exceeds the model's motion max_seq_length "
                             f"{config.motion.max_seq_length}")
        factor = 8 * 2 ** (len(config.block_out_channels) - 1)
        if self.width % factor or self.height % factor:
            raise ValueError(f"width and height must be multiples of {factor} for this model, "
                             f"got width={self.width}, height={self.height}")
        videos = list_prepared(self.data_dir)
        need = (self.clip_length - 1) * self.frame_stride + 1
        if not videos:
            raise ValueError(f"data_dir: no prepared videos in {self.data_dir} (run python -m movingbg.prepare)")
        if not any(v.num_frames >= need for v in videos):
            raise ValueError(f"data_dir: no prepared video has the {need} frames that clip_length="
                             f"{self.clip_length} x frame_stride={self.frame_stride} needs")
        return config

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(self.model, MovingBGConfig):
            d["model"] = self.model.to_dict()
        d["tracks_range"] = list(self.tracks_range)
        d["freeze"] = list(self.freeze)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys and missing required ones raise ValueError naming them."""
        if not isinstance(data, Mapping):
            raise ValueError(f"the training config must be a mapping of fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        missing = [n for n in ("data_dir", "output_dir", "vae") if n not in data]
        if missing:
            raise ValueError(f"missing required TrainConfig fields {missing}")
        values = dict(data)
        for key in ("tracks_range", "freeze"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _resolve_model(model: Any) -> MovingBGConfig:
    if isinstance(model, MovingBGConfig):
        return model
    if model in ("sd15", "tiny"):
        return MovingBGConfig.sd15() if model == "sd15" else MovingBGConfig.tiny()
    path = Path(str(model))
    if not path.is_file():
        raise ValueError(f"model: expected 'sd15', 'tiny', a MovingBGConfig dict or a JSON file, got {model!r}")
    try:
        return MovingBGConfig.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"model: {path} is not a valid MovingBGConfig JSON: {exc}") from exc


def load_config(path: os.PathLike | str, overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """Read a JSON (``.json``) or YAML (``.yaml`` / ``.yml``) training config.

    Args:
        path: the file.
        overrides: fields replacing the file's values (e.g. from ``--set key=value``).

    Raises:
        ValueError: unreadable file, unknown / missing / bad fields (named in the message).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config: file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise ValueError("config: YAML configs need PyYAML (pip install pyyaml), or use JSON") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"config: {p} is not valid YAML: {exc}") from exc
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config: {p} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"config: {p} must hold a mapping of TrainConfig fields")
    data.update(overrides or {})
    return TrainConfig.from_dict(data)
