"""Benchmark of the MovingBG network against a plain diffusers UNetMotionModel of the same size.

One denoising step on a 16-frame clip, each case in its own process:
  * plain : diffusers UNetMotionModel (4 input channels, same U-Net / motion modules),
  * bare  : MovingBGModel.forward with the new parts off (9-channel conv_in, no bank, no maps),
  * bank  : + reference attention (bank from encode_reference),
  * full  : + condition latent + pose and track encoders (everything on),
  * reference : the reference U-Net's one-off encode_reference.
Figures: wall and process-CPU time (median of N after one warm-up; CPU time is the steadier figure
on a shared machine) and peak memory of the step (CPU: RSS sampled every 2 ms above the RSS before
the step; CUDA: max_memory_allocated above the allocation before the step). Then, from the config
alone (meta device, no RAM), the parameter count and fp16 size of the full SD1.5 model.

Usage:
    python benchmarks/bench_generator.py                   # "bench" config, 16 frames, 32x32 latent
    python benchmarks/bench_generator.py --device cuda --config sd15 --latent 64
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from movingbg.models.bundle import empty_model  # noqa: E402
from movingbg.models.config import SD15_UNET, MovingBGConfig  # noqa: E402
from movingbg.models.generator import MovingBGModel, denoising_unet_kwargs  # noqa: E402

BENCH_UNET = dict(SD15_UNET, block_out_channels=(64, 128, 256, 256), sample_size=32)


def make_config(name: str) -> MovingBGConfig:
    """``bench``: SD1.5 structure at 1/5 width (4 levels, 2 layers, 768-d cross-attention)."""
    if name == "bench":
        return MovingBGConfig(unet=BENCH_UNET)
    return MovingBGConfig.sd15() if name == "sd15" else MovingBGConfig.tiny()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory above the level at ``__enter__`` (CUDA allocator, else sampled process RSS)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes() - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes() - self.base)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _inputs(cfg: MovingBGConfig, frames: int, latent: int, device, dtype) -> dict:
    g = torch.Generator().manual_seed(0)
    px = latent * cfg.encoder_downscale
    make = lambda *s: torch.randn(*s, generator=g).to(device, dtype)  # noqa: E731
    return {"noisy": make(1, 4, frames, latent, latent), "clip": make(1, 1, cfg.cross_attention_dim),
            "ref": make(1, 4, latent, latent), "cond": make(1, 4, latent, latent),
            "pose": make(1, 3, frames, px, px).clamp(0, 1), "track": make(1, 3, frames, px, px).clamp(0, 1)}


CASES = {
    "plain": "diffusers UNetMotionModel step",
    "bare": "MovingBG step, new parts off",
    "bank": "MovingBG step + reference attention",
    "full": "MovingBG step, all parts on",
    "reference": "reference U-Net, once per video",
}


def _build_step(case: str, cfg: MovingBGConfig, x: dict, device, dtype):
    """A zero-argument callable running the measured step, and the model (kept alive)."""
    from diffusers import UNetMotionModel

    frames = x["noisy"].shape[2]
    if case == "plain":
        model = UNetMotionModel(**denoising_unet_kwargs(cfg.replace(use_concat=False))).to(device, dtype).eval()
        tokens = x["clip"].repeat_interleave(frames, 0)
        return (lambda: model(x["noisy"], 500, encoder_hidden_states=tokens).sample), model
    model = MovingBGModel(cfg).to(device, dtype).eval()
    if case == "reference":
        return (lambda: model.encode_reference(x["ref"], x["clip"])), model
    with torch.inference_mode():
        bank = model.encode_reference(x["ref"], x["clip"])
    kwargs = {"clip_embeds": x["clip"]}
    if case in ("bank", "full"):
        kwargs["bank"] = bank
    if case == "full":
        kwargs.update(cond_latent=x["cond"], pose_maps=x["pose"], track_maps=x["track"])
    return (lambda: model(x["noisy"], 500, **kwargs)), model


def run_case(case: str, args: argparse.Namespace) -> dict:
    """Build one case, warm up once, then time ``args.repeats`` steps (wall and process CPU time)."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    cfg = make_config(args.config)
    x = _inputs(cfg, args.frames, args.latent, device, dtype)
    step, _model = _build_step(case, cfg, x, device, dtype)
    wall, cpu, peak = [], [], 0
    with torch.inference_mode():
        for i in range(args.repeats + 1):
            with PeakMemory(device) as mem:
                t0, c0 = time.perf_counter(), time.process_time()
                step()
                _sync(device)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
            peak = max(peak, mem.peak)
            if i:  # the first call is the warm-up
                wall.append(dt)
                cpu.append(dc)
    return {"case": case, "wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu), "peak_bytes": peak}


def _child(case: str, args: argparse.Namespace, queue) -> None:
    queue.put(run_case(case, args))


def run_isolated(case: str, args: argparse.Namespace) -> dict:
    """Run a case in a fresh process so that RSS peaks do not mix between cases."""
    if args.device != "cpu":
        return run_case(case, args)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(case, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def full_size_report() -> None:
    """Parameter count / fp16 size of the SD1.5 model and bank size at 512x512, on the meta device."""
    model = empty_model(MovingBGConfig.sd15())
    total = 0
    print("\nFull-size (SD1.5) MovingBG model, from config on the meta device:")
    for name, part in model.named_children():
        n = sum(p.numel() for p in part.parameters())
        total += n
        extra = ""
        if name == "denoising_unet":
            motion = sum(p.numel() for k, p in part.named_parameters() if ".motion_modules." in k)
            extra = f"  (motion modules {motion / 1e6:.1f} M)"
        print(f"  {name:15s} {n / 1e6:9.2f} M params  {n * 2 / 2**20:9.1f} MiB fp16{extra}")
    print(f"  {'total':15s} {total / 1e6:9.2f} M params  {total * 2 / 2**20:9.1f} MiB fp16"
          f" ({total * 2 / 2**30:.2f} GiB)")
    with torch.no_grad():
        bank = model.encode_reference(torch.empty(1, 4, 64, 64, device="meta"))
    print(f"  reference bank at 512x512: {len(bank)} entries, "
          f"{sum(v.numel() for v in bank.features.values()) * 2 / 2**20:.1f} MiB fp16")


def full_size_flops(frames: int = 16, latent: int = 64) -> None:
    """FLOPs of one SD1.5-size step (plain vs ours) counted on the meta device (no compute, no RAM)."""
    from diffusers import UNetMotionModel
    from torch.utils.flop_counter import FlopCounterMode

    cfg = MovingBGConfig.sd15()
    ours = empty_model(cfg)
    with torch.device("meta"):
        plain = UNetMotionModel(**denoising_unet_kwargs(cfg.replace(use_concat=False)))
    meta = lambda *shape: torch.empty(*shape, device="meta")  # noqa: E731
    noisy, clip, px = meta(1, 4, frames, latent, latent), meta(1, 1, 768), latent * 8

    def count(fn) -> float:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 1e12

    plain_t = count(lambda: plain(noisy, 10, encoder_hidden_states=meta(frames, 1, 768)))
    bank = ours.encode_reference(meta(1, 4, latent, latent), clip)
    ref_t = count(lambda: ours.encode_reference(meta(1, 4, latent, latent), clip))
    bank_t = count(lambda: ours(noisy, 10, clip_embeds=clip, bank=bank))
    full_t = count(lambda: ours(noisy, 10, clip_embeds=clip, bank=bank, cond_latent=meta(1, 4, latent, latent),
                                pose_maps=meta(1, 3, frames, px, px), track_maps=meta(1, 3, frames, px, px)))
    print(f"\nFull-size FLOPs per step, {frames} frames at {px}x{px} (one batch item, no CFG):")
    print(f"  plain UNetMotionModel {plain_t:7.2f} TFLOP")
    print(f"  ours + reference attn {bank_t:7.2f} TFLOP  (x{bank_t / plain_t:.3f})")
    print(f"  ours, all parts on    {full_t:7.2f} TFLOP  (x{full_t / plain_t:.3f})")
    print(f"  reference U-Net once  {ref_t:7.2f} TFLOP")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("bench", "tiny", "sd15"), default="bench")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--latent", type=int, default=32, help="latent side (pixels / 8)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--skip-full-size", action="store_true")
    args = parser.parse_args()

    cfg = make_config(args.config)
    print(f"config={args.config} block_out_channels={cfg.block_out_channels} frames={args.frames} "
          f"latent={args.latent}x{args.latent} device={args.device} dtype={args.dtype} "
          f"threads={args.threads or torch.get_num_threads()}")
    res = {case: run_isolated(case, args) for case in CASES}
    for case, label in CASES.items():
        r = res[case]
        print(f"  {label:38s} wall {r['wall_s'] * 1e3:9.1f} ms  cpu {r['cpu_s'] * 1e3:9.1f} ms  "
              f"peak +{r['peak_bytes'] / 2**20:8.1f} MiB")
    p = res["plain"]
    for case in ("bare", "bank", "full"):
        o = res[case]
        print(f"  ratio {case}/plain: wall x{o['wall_s'] / p['wall_s']:.3f}  cpu x{o['cpu_s'] / p['cpu_s']:.3f}  "
              f"peak memory x{o['peak_bytes'] / max(p['peak_bytes'], 1):.3f}")
    if not args.skip_full_size:
        full_size_report()
        full_size_flops(args.frames)


if __name__ == "__main__":
    main()
