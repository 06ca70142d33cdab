"""The training loop (HF accelerate: one process, DDP on N GPUs / nodes, FSDP or DeepSpeed per accelerate config).

One optimizer step = ``gradient_accumulation_steps`` micro-batches per process. For every sample:

1. the clip's frames and the reference image are encoded by the frozen VAE (posterior sample, scaled
   by ``vae_scale_factor``); the condition latent is the clip's first-frame latent (blank: zeros and the
   first-frame marker off, as :func:`movingbg.pipelines.generate` does for a blank condition);
2. noise and a timestep ``t ~ U{0..999}`` are drawn (with ``high_noise_prob``, some from
   ``U{high_noise_min..999}``); ``z_t = add_noise(z_0, eps, t)`` (diffusers
   ``DDPMScheduler`` with the model's beta schedule; zero terminal SNR for v-prediction);
3. the reference U-Net runs on the reference latent (its bank feeds the denoising U-Net's
   self-attentions), the denoising U-Net predicts ``eps`` or ``v`` (``MovingBGConfig.prediction_type``)
   from ``[z_t ; condition ; marker]``, the CLIP embedding, and the pose / track features;
4. loss = MSE(prediction, target).

Every random choice (data, VAE posterior noise, diffusion noise, timesteps) is derived from the run's
seed and the GLOBAL sample index, so results do not depend on the number of data-loader workers and a
resumed run continues exactly where the checkpoint was taken.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.config import MovingBGConfig
from ..models.generator import MovingBGModel
from .checkpoint import (EMA, clean_partial, latest_checkpoint, load_ema, read_trainer_state, save_checkpoint,
                         strip_wrapper_prefix)
from .config import NUM_TRAIN_TIMESTEPS, TrainConfig
from .data import ClipDataset, DataOptions, StreamSampler, to_model_inputs, worker_init
from .encoders import encode_latents, load_clip_encoder, load_vae
from .latents import LatentCache

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "TrainResult", "TrainingModule", "build_model", "EXPORT_DTYPES"]

EXPORT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_SAMPLE_SALT = 0xD1F5


def _import_accelerate():
    try:
        import accelerate
    except ImportError as exc:
        raise ImportError("training needs HF accelerate: pip install accelerate "
                          "(or pip install 'movingbg[train]')") from exc
    return accelerate


# --------------------------------------------------------------------------------------------
# the module DDP wraps


@contextlib.contextmanager
def _masked_condition(net: MovingBGModel, keep: Optional[torch.Tensor], frames: int) -> Iterator[None]:
    """Per-sample blank condition: zero the condition latent AND the first-frame marker of samples with
    ``keep == False`` (exactly the U-Net input of ``cond_latent=None``), in one batched forward."""
    if keep is None or not net.config.use_concat or bool(keep.all()):
        yield
        return
    c = net.config.latent_channels

    def hook(_module, args):
        x = args[0]
        mask = keep.to(x.dtype).repeat_interleave(frames).view(-1, 1, 1, 1)
        return (torch.cat([x[:, :c], x[:, c:] * mask], dim=1),) + tuple(args[1:])

    handle = net.denoising_unet.conv_in.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class TrainingModule(nn.Module):
    """:class:`MovingBGModel` plus the per-step wiring, so that ONE forward covers the reference U-Net and
    the denoising U-Net (what DDP / FSDP wrap).

    Args:
        net: the model being trained.
    """

    def __init__(self, net: MovingBGModel) -> None:
        super().__init__()
        self.net = net

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, *, ref_latent: torch.Tensor,
                clip_embeds: Optional[torch.Tensor], clip_keep: torch.Tensor, cond_latent: torch.Tensor,
                cond_keep: torch.Tensor, pose_maps: torch.Tensor, track_maps: torch.Tensor,
                use_bank: bool | torch.Tensor) -> torch.Tensor:
        """Prediction for a batch.

        Args:
            noisy: ``(B, 4, F, h, w)``; timesteps: ``(B,)``.
            ref_latent: ``(B, 4, h, w)`` scaled reference latent.
            clip_embeds: ``(B, 1, D)`` or None (zeros); clip_keep: ``(B,)`` bool, False = zero embedding.
            cond_latent: ``(B, 4, h, w)`` condition latent; cond_keep: ``(B,)`` bool, False = blank.
            pose_maps, track_maps: ``(B, 3, F, H, W)`` in 0..1.
            use_bank: the reference bank for every sample (True), none (False = the CFG "no reference"
                branch), or per sample: ``(B,)`` bool (CPU), False = that sample attends without the
                bank (``MovingBGModel.forward(reference_keep=...)``); the reference U-Net runs only if
                some sample keeps it.

        Returns:
            ``(B, 4, F, h, w)``.
        """
        net, cfg = self.net, self.net.config
        keep = tuple(use_bank.tolist()) if isinstance(use_bank, torch.Tensor) else (bool(use_bank),) * noisy.shape[0]
        bank = net.encode_reference(ref_latent, clip_embeds) if any(keep) and net.reference_unet is not None else None
        clip = None if clip_embeds is None else clip_embeds * clip_keep.to(clip_embeds.dtype).view(-1, 1, 1)
        with _masked_condition(net, cond_keep, noisy.shape[2]):
            return net(noisy, timesteps, clip_embeds=clip, bank=bank,
                       reference_keep=None if bank is None or all(keep) else keep,
                       cond_latent=cond_latent if cfg.use_concat else None,
                       pose_maps=pose_maps if cfg.use_fg else None, track_maps=track_maps if cfg.use_bg else None)


def build_model(config: TrainConfig, model_config: MovingBGConfig) -> MovingBGModel:
    """The initial float32 model for ``config.init`` (random / bundle / Moore / LDM + AnimateDiff)."""
    if config.init == "bundle":
        from ..models.bundle import load_bundle

        net = load_bundle(config.init_path, dtype=torch.float32)
        net.config = model_config  # the bundle's own (TrainConfig.model_config), with the run's track_trail
        return _reset_encoders(net, config.reset_encoders)
    if config.init == "moore":
        from ..models.build import build_from_moore

        return build_from_moore(Path(config.init_path), torch.float32, model_config)
    if config.init == "ldm":
        from ..models.build import build_from_ldm

        guider = Path(config.init_pose_guider) if config.init_pose_guider else None
        return build_from_ldm(Path(config.init_path), Path(config.init_motion), guider, torch.float32, model_config)
    return MovingBGModel(model_config)


def _reset_encoders(net: MovingBGModel, names: Sequence[str]) -> MovingBGModel:
    """Replace the named motion encoders (``"fg"``, ``"bg"``) of a loaded model by fresh ones: random inner
    layers and a zero ``conv_out``, so they add nothing until training moves them (what the old ones added is
    dropped: for a dead encoder, a near-constant)."""
    for name in names:
        if getattr(net, f"{name}_encoder") is None:
            raise ValueError(f"reset_encoders: the model has no {name} encoder (use_{name}=False)")
        setattr(net, f"{name}_encoder", net._new_encoder())
    return net


def _sample_seed(seed: int, index: int) -> int:
    """Seed of the torch generator of global sample ``index``."""
    return int(np.random.SeedSequence([int(seed), _SAMPLE_SALT, int(index)]).generate_state(1, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :meth:`Trainer.run`.

    Attributes:
        steps: optimizer steps done in total; final_loss: mean loss of the last step.
        checkpoint: the last checkpoint; export_path: the exported bundle (None on processes other than the main one).
        resumed_from: checkpoint the run continued from (None for a fresh start).
        samples_per_second: global samples per second (steps after the first of this run).
        data_fraction: share of step time spent waiting for the data loader (same steps).
        losses: mean loss of every step of this run.
    """

    steps: int
    final_loss: float
    checkpoint: Optional[Path]
    export_path: Optional[Path]
    resumed_from: Optional[Path]
    samples_per_second: float
    data_fraction: float
    losses: tuple[float, ...] = field(default=(), repr=False)


class Trainer:
    """Sets up model, frozen encoders, optimizer, data and accelerate; :meth:`run` trains.

    Args:
        config: the run (checked with :meth:`TrainConfig.check_start` first).
        accelerator: an ``accelerate.Accelerator`` (default: one built from the config).

    Raises:
        ValueError: a bad config (the message names the field); ImportError: accelerate missing.
    """

    def __init__(self, config: TrainConfig, accelerator: Any = None) -> None:
        model_config = config.check_start()
        accelerate = _import_accelerate()
        self.config = config
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self.accelerator = accelerator or self._make_accelerator(accelerate)
        accelerate.utils.set_seed(config.seed)
        self.device = self.accelerator.device
        self.net = build_model(config, model_config)
        self.model_config = self.net.config
        self.trainable = self._configure_parameters()
        self._load_encoders()
        self.noise_scheduler = self._make_noise_scheduler()
        self.dataset = ClipDataset(config.data_dir, DataOptions.from_config(
            config, track_trail=self.model_config.track_trail))
        self.latent_cache = (LatentCache(self.vae, self.dataset, float(self.model_config.vae_scale_factor),
                                         config.vae_chunk, config.latent_cache_dir) if config.cache_latents else None)
        if self.latent_cache is not None and self.latent_cache.folder is not None:
            # every process encodes its share of the missing videos, then all read every video from disk
            acc = self.accelerator
            self.latent_cache.fill(acc.process_index, acc.num_processes, log=lambda m: logger.info("%s", m))
            acc.wait_for_everyone()
        optimizer = torch.optim.AdamW(
            [p for _, p in self.trainable], lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_epsilon, weight_decay=config.weight_decay, foreach=True)
        self.module, self.optimizer = self.accelerator.prepare(TrainingModule(self.net), optimizer)
        self.sharded = self.accelerator.distributed_type.name in ("FSDP", "DEEPSPEED", "MEGATRON_LM")
        if self.sharded and config.ema_decay > 0:
            raise ValueError("ema_decay: EMA is not supported with FSDP / DeepSpeed (parameters are sharded); "
                             "set ema_decay 0 or use DDP")
        self.ema = EMA(dict(self.trainable), config.ema_decay) if config.ema_decay > 0 else None
        self.step = 0
        self._writer = None
        n_train = sum(p.numel() for _, p in self.trainable)
        self._log_main("%.1f M parameters trained, %d videos, %d process(es) (%s), device %s, %s",
                       n_train / 1e6, len(self.dataset), self.accelerator.num_processes,
                       self.accelerator.distributed_type.name, self.device, self.model_config.prediction_type)

    # ---- setup -----------------------------------------------------------------------------------
    def _make_accelerator(self, accelerate):
        from accelerate.utils import DistributedDataParallelKwargs

        ddp = DistributedDataParallelKwargs(find_unused_parameters=self.config.find_unused_parameters)
        return accelerate.Accelerator(mixed_precision=self.config.mixed_precision,
                                      cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])

    def _configure_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Apply ``freeze`` and gradient checkpointing; return the trained ``(name, parameter)``."""
        names = [n for n, _ in self.net.named_parameters()]
        for pattern in self.config.freeze:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise ValueError(f"freeze: pattern {pattern!r} matches no parameter (names look like "
                                 f"{names[0]!r})")
        trainable = []
        for name, p in self.net.named_parameters():
            frozen = any(fnmatch.fnmatchcase(name, pat) for pat in self.config.freeze)
            p.requires_grad_(not frozen)
            if not frozen:
                trainable.append((name, p))
        if not trainable:
            raise ValueError("freeze: every parameter is frozen; nothing to train")
        if self.config.gradient_checkpointing:
            self.net.denoising_unet.enable_gradient_checkpointing()
            if self.net.reference_unet is not None:
                self.net.reference_unet.enable_gradient_checkpointing()
        self.net.train()
        return trainable

    def _load_encoders(self) -> None:
        enc_dtype = torch.bfloat16 if self.config.mixed_precision == "bf16" else torch.float32
        try:
            self.vae = load_vae(self.config.vae, enc_dtype).to(self.device)
        except (OSError, ValueError) as exc:
            raise ValueError(f"vae: cannot load {self.config.vae}: {exc}") from exc
        self.clip = None
        if self.config.clip_encoder:
            self.clip = load_clip_encoder(self.config.clip_encoder, enc_dtype).to(self.device)
            if self.clip.dim != self.model_config.cross_attention_dim:
                raise ValueError(f"clip_encoder: projection size {self.clip.dim} differs from the model's "
                                 f"cross-attention width {self.model_config.cross_attention_dim}")

    def _make_noise_scheduler(self):
        from diffusers import DDPMScheduler

        c = self.model_config
        return DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_start=0.00085, beta_end=0.012,
                             beta_schedule=c.beta_schedule, prediction_type=c.prediction_type, clip_sample=False,
                             rescale_betas_zero_snr=self.config.use_zero_snr(c))

    def _log_main(self, msg: str, *args: Any) -> None:
        if self.accelerator.is_main_process:
            logger.info(msg, *args)

    # ---- one step --------------------------------------------------------------------------------
    def _draws(self, indices: Sequence[int], frames: int, hw: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """Per-sample randomness from ``(seed, global index)``: VAE noise for the frames and the
        reference, diffusion noise, timesteps (drawn on the CPU, so any device gives the same values)."""
        c = self.model_config.latent_channels
        vae_f, vae_r, noise, t = [], [], [], []
        for index in indices:
            g = torch.Generator().manual_seed(_sample_seed(self.config.seed, int(index)))
            vae_f.append(torch.randn(frames, c, *hw, generator=g))
            vae_r.append(torch.randn(1, c, *hw, generator=g))
            noise.append(torch.randn(c, frames, *hw, generator=g))
            t.append(self._timestep(g))
        dev = self.device
        return (torch.cat(vae_f).to(dev), torch.cat(vae_r).to(dev), torch.stack(noise).to(dev), torch.cat(t).to(dev))

    def _timestep(self, g: torch.Generator) -> torch.Tensor:
        """``(1,)`` timestep: uniform on ``0..999``, or with probability ``high_noise_prob`` uniform on
        ``high_noise_min..999``. With ``high_noise_prob = 0`` nothing more is drawn from ``g``, so runs
        without the option draw exactly what they always drew."""
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (1,), generator=g)
        if self.config.high_noise_prob > 0 and float(torch.rand(1, generator=g)) < self.config.high_noise_prob:
            t = torch.randint(self.config.high_noise_min, NUM_TRAIN_TIMESTEPS, (1,), generator=g)
        return t

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Loss of one micro-batch (collated :class:`ClipDataset` items); differentiable."""
        inp = to_model_inputs(batch, self.device)
        pixels = inp["pixels"]
        b, f, _, h, w = pixels.shape
        vae_f, vae_r, noise, t = self._draws(inp["index"].tolist(), f, (h // 8, w // 8))
        if self.latent_cache is not None:
            latents, ref_latent = self._cached_latents(inp, vae_f, vae_r)
        else:
            scale, chunk = float(self.model_config.vae_scale_factor), self.config.vae_chunk
            latents = encode_latents(self.vae, pixels.flatten(0, 1), scale, vae_f, chunk)
            ref_latent = encode_latents(self.vae, inp["reference"], scale, vae_r, chunk)
        latents = latents.view(b, f, *latents.shape[1:]).permute(0, 2, 1, 3, 4)  # (B, 4, F, h, w)
        clip = self.clip(inp["reference"]) if self.clip is not None else None
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        if self.model_config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, t)
        else:
            target = noise
        pred = self.module(noisy, t, ref_latent=ref_latent, clip_embeds=clip, clip_keep=~inp["drop_clip"],
                           cond_latent=latents[:, :, 0], cond_keep=~inp["blank"], pose_maps=inp["pose"],
                           track_maps=inp["tracks"], use_bank=~inp["drop_reference"])
        return F.mse_loss(pred.float(), target.float())

    def _cached_latents(self, inp: dict[str, torch.Tensor], vae_f: torch.Tensor,
                        vae_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B * F, C, h, w)`` clip latents and ``(B, C, h, w)`` reference latents of the batch's samples from
        the latent cache (each item names its video and frames; the posterior is sampled with the same noise
        as the uncached path)."""
        cache, frames, refs = self.latent_cache, [], []
        f = inp["frame_ids"].shape[1]
        for j, video in enumerate(inp["video"].tolist()):
            frames.append(cache.latents(video, inp["frame_ids"][j].tolist(), vae_f[j * f:(j + 1) * f]))
            refs.append(cache.latents(video, [int(inp["reference_id"][j])], vae_r[j:j + 1]))
        return torch.cat(frames).to(self.device), torch.cat(refs).to(self.device)

    def learning_rate(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then constant."""
        warm = self.config.lr_warmup_steps
        return self.config.learning_rate * (min(1.0, (step + 1) / warm) if warm else 1.0)

    def train_step(self, batches: Sequence[dict[str, torch.Tensor]]) -> float:
        """One optimizer step over ``batches`` (the micro-batches of gradient accumulation).

        Returns:
            the loss averaged over micro-batches and processes.
        """
        acc = self.accelerator
        total = torch.zeros((), device=self.device)
        for i, batch in enumerate(batches):
            sync = i == len(batches) - 1
            with contextlib.nullcontext() if sync else acc.no_sync(self.module):
                loss = self.compute_loss(batch)
                acc.backward(loss / len(batches))
            total += loss.detach() / len(batches)
        if self.config.max_grad_norm > 0:
            acc.clip_grad_norm_(self.module.parameters(), self.config.max_grad_norm)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(dict(self.trainable))
        return float(acc.reduce(total, reduction="mean").item())

    # ---- data ------------------------------------------------------------------------------------
    def make_loader(self, start_micro_step: int = 0):
        """Endless data loader of this process from micro-step ``start_micro_step`` on."""
        from torch.utils.data import DataLoader

        acc, c = self.accelerator, self.config
        sampler = StreamSampler(acc.process_index, acc.num_processes, c.batch_size, start_micro_step)
        workers = c.num_workers
        return DataLoader(self.dataset, batch_size=c.batch_size, sampler=sampler, num_workers=workers,
                          worker_init_fn=worker_init if workers else None, persistent_workers=workers > 0,
                          prefetch_factor=4 if workers else None, pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(c.seed))

    # ---- resume / checkpoints --------------------------------------------------------------------
    def resume(self) -> Optional[Path]:
        """Load the checkpoint named by ``config.resume`` (``auto``: the newest, if any)."""
        c = self.config
        if self.accelerator.is_main_process:
            clean_partial(c.output_dir)
        self.accelerator.wait_for_everyone()
        if c.resume == "none":
            return None
        ckpt = latest_checkpoint(c.output_dir) if c.resume == "auto" else Path(c.resume)
        if ckpt is None:
            return None
        state = read_trainer_state(ckpt)
        self._warn_if_changed(ckpt, state)
        self.accelerator.load_state(str(ckpt))
        if self.ema is not None:
            load_ema(ckpt, self.ema, self.device)
        self.step = int(state["step"])
        self._log_main("resumed from %s (step %d)", ckpt, self.step)
        return ckpt

    def _warn_if_changed(self, ckpt: Path, state: dict) -> None:
        """Exact continuation needs the same seed, batch layout and process count; warn otherwise."""
        import json

        if not self.accelerator.is_main_process:
            return
        if state.get("world_size", self.accelerator.num_processes) != self.accelerator.num_processes:
            logger.warning("resuming a %s-process run with %d processes: the data order changes",
                           state.get("world_size"), self.accelerator.num_processes)
        try:
            saved = json.loads((ckpt / "train_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        now = self.config.to_dict()
        changed = [k for k in ("seed", "batch_size", "gradient_accumulation_steps", "clip_length", "frame_stride",
                               "width", "height", "data_dir") if saved.get(k) != now.get(k)]
        if changed:
            logger.warning("resuming with changed %s: the run will not continue exactly as it would have", changed)

    def save(self) -> Path:
        """Checkpoint the current step (all processes must call it)."""
        return save_checkpoint(self.accelerator, self.config.output_dir, self.step, ema=self.ema,
                               model_config_json=self.model_config.to_json(indent=2),
                               train_config=self.config.to_dict(), keep_last=self.config.keep_last,
                               extra_state={"world_size": self.accelerator.num_processes,
                                            "micro_steps": self.step * self.config.gradient_accumulation_steps})

    # ---- export ----------------------------------------------------------------------------------
    def final_state_dict(self) -> dict[str, torch.Tensor]:
        """MovingBGModel state dict (EMA weights when EMA is on), on the CPU. All processes must call it."""
        state = strip_wrapper_prefix(self.accelerator.get_state_dict(self.module))
        if self.ema is not None:
            state.update({k: v.detach().to(state[k].dtype) for k, v in self.ema.shadow.items()})
        return {k: v.detach().cpu() for k, v in state.items()}

    def export(self, path: Optional[Path] = None) -> Optional[Path]:
        """Write the bundle (``save_bundle``) on the main process; returns its path there, else None."""
        from ..models.bundle import model_from_state_dict, save_bundle

        state = self.final_state_dict()
        if not self.accelerator.is_main_process:
            return None
        path = Path(path or Path(self.config.export_dir or self.config.output_dir) / self.config.export_name)
        model = model_from_state_dict(self.model_config, state, dtype=EXPORT_DTYPES[self.config.export_dtype])
        return save_bundle(model, path)

    # ---- the loop --------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train to ``max_steps`` (resuming first), checkpoint, sample, export."""
        from .loop import run_training

        return run_training(self)

    def writer(self):
        """TensorBoard ``SummaryWriter`` on the main process (None when off or not installed)."""
        if self._writer is None and self.config.tensorboard and self.accelerator.is_main_process:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.warning("tensorboard is not installed (pip install tensorboard); not writing events")
                self._writer = False
            else:
                self._writer = SummaryWriter(log_dir=str(Path(self.config.output_dir) / "tensorboard"))
        return self._writer or None
