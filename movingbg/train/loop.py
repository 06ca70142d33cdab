"""The step loop of :meth:`Trainer.run`: progress, logs, TensorBoard, checkpoints, samples, export."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

if TYPE_CHECKING:
    from .trainer import Trainer, TrainResult

logger = logging.getLogger(__name__)

__all__ = ["run_training", "write_sample"]


@dataclass
class _Stats:
    """Running timings of this run (the first step, with start-up costs, is left out)."""

    losses: list = field(default_factory=list)
    data_s: float = 0.0
    step_s: float = 0.0
    counted: int = 0

    def add(self, loss: float, data_s: float, step_s: float) -> None:
        self.losses.append(loss)
        if len(self.losses) > 1:
            self.data_s += data_s
            self.step_s += step_s
            self.counted += 1

    @property
    def data_fraction(self) -> float:
        return self.data_s / self.step_s if self.step_s > 0 else 0.0

    def samples_per_second(self, per_step: int) -> float:
        return per_step * self.counted / self.step_s if self.step_s > 0 else 0.0


def _report(trainer: Trainer, bar, loss: float, lr: float, stats: _Stats, per_step: int) -> None:
    c, step = trainer.config, trainer.step
    bar.update(1)
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
    writer = trainer.writer()
    if writer is not None:
        writer.add_scalar("train/loss", loss, step)
        writer.add_scalar("train/lr", lr, step)
        if stats.counted:
            writer.add_scalar("train/samples_per_second", stats.samples_per_second(per_step), step)
            writer.add_scalar("train/data_fraction", stats.data_fraction, step)
    if step % c.log_every == 0 or step == c.max_steps:
        trainer._log_main("step %d/%d loss %.5f lr %.3g (%.2f samples/s, data %.1f%% of step time)", step,
                          c.max_steps, loss, lr, stats.samples_per_second(per_step), 100 * stats.data_fraction)


def run_training(trainer: Trainer) -> TrainResult:
    """Resume, train to ``max_steps``, checkpoint every ``checkpoint_every`` and at the end, export."""
    from tqdm.auto import tqdm

    from .trainer import TrainResult

    c, acc = trainer.config, trainer.accelerator
    resumed = trainer.resume()
    last_ckpt, stats = resumed, _Stats()
    per_step = c.batch_size * c.gradient_accumulation_steps * acc.num_processes
    bar = tqdm(total=c.max_steps, initial=trainer.step, unit="step", desc="train", dynamic_ncols=True,
               disable=not (c.progress and acc.is_main_process))
    loader = trainer.make_loader(trainer.step * c.gradient_accumulation_steps) if trainer.step < c.max_steps else None
    batches = iter(loader) if loader is not None else iter(())
    try:
        while trainer.step < c.max_steps:
            t0 = time.perf_counter()
            micro = [next(batches) for _ in range(c.gradient_accumulation_steps)]
            t1 = time.perf_counter()
            lr = trainer.learning_rate(trainer.step)
            loss = trainer.train_step(micro)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {trainer.step + 1}; lower learning_rate "
                                         "(or use bf16 instead of fp16)")
            trainer.step += 1
            stats.add(loss, t1 - t0, time.perf_counter() - t0)
            _report(trainer, bar, loss, lr, stats, per_step)
            if trainer.step % c.checkpoint_every == 0 or trainer.step == c.max_steps:
                last_ckpt = trainer.save()
            if c.sample_every and trainer.step % c.sample_every == 0 and acc.is_main_process:
                if trainer.sharded:
                    logger.warning("sample videos are skipped with FSDP / DeepSpeed (sharded parameters)")
                else:
                    write_sample(trainer)
    finally:
        bar.close()
        del batches, loader
        if trainer.writer() is not None:
            trainer.writer().close()
    export_path = trainer.export()
    if export_path is not None:
        logger.info("exported %s", export_path)
    final = stats.losses[-1] if stats.losses else float("nan")
    return TrainResult(trainer.step, final, last_ckpt, export_path, resumed,
                       stats.samples_per_second(per_step), stats.data_fraction, tuple(stats.losses))


def write_sample(trainer: Trainer, path: Optional[Path] = None) -> Path:
    """Generate the first clip of the first video with the current weights (progressive sampler) and
    write ``[ground truth | generated]`` side by side to ``samples/step-XXXXXXXX.mp4``."""
    from torch.utils.data import default_collate

    from ..io.video import write_video
    from ..pipelines import GenerationOptions, SchedulerOptions, generate
    from .data import SampleChoice, to_model_inputs
    from .encoders import decode_latents, encode_latents

    c, mc, dev = trainer.config, trainer.model_config, trainer.device
    span = trainer.dataset.options.span
    choice = SampleChoice(0, tuple(range(0, span, c.frame_stride)), 0, False, False, False)
    item = trainer.dataset.render(choice, None, num_tracks=(c.tracks_range[1], c.tracks_range[1]))
    inp = to_model_inputs(default_collate([item]), dev)
    scale = float(mc.vae_scale_factor)
    ref_latent = encode_latents(trainer.vae, inp["reference"], scale)
    clip = trainer.clip(inp["reference"]) if trainer.clip is not None else None
    zero_snr = c.use_zero_snr(mc)
    options = GenerationOptions(
        steps=c.sample_steps, cfg_scale=c.sample_cfg, clip_length=c.clip_length, handover="latent",
        scheduler=SchedulerOptions(prediction_type=mc.prediction_type, rescale_betas_zero_snr=zero_snr,
                                   beta_schedule=mc.beta_schedule))
    net, was_training = trainer.net, trainer.net.training
    net.eval()
    try:
        with torch.no_grad(), trainer.accelerator.autocast():
            result = generate(net, ref_latent=ref_latent, clip_embeds=clip, pose_maps=inp["pose"][0].transpose(0, 1),
                              track_maps=inp["tracks"][0].transpose(0, 1), num_frames=c.clip_length,
                              options=options)
    finally:
        net.train(was_training)
    video = decode_latents(trainer.vae, result.latents.to(dev), scale, c.vae_chunk)
    truth = (inp["pixels"][0] + 1) / 2
    side = torch.cat([truth, video], dim=-1).permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy()
    frames = np.clip(np.rint(side * 255.0), 0, 255).astype(np.uint8)
    fps = max(1.0, trainer.dataset.videos[0].fps / c.frame_stride)
    out = path or Path(c.output_dir) / "samples" / f"step-{trainer.step:08d}.mp4"
    write_video(out, frames, fps)
    logger.info("wrote sample %s", out)
    return out
