"""Classifier-free guidance: batched (one U-Net call of batch 2) vs sequential (two calls of batch 1).

    python benchmarks/bench_cfg.py [--frames 24] [--steps 6] [--size 8] [--threads 1] [--repeats 3]
                                   [--device cpu|cuda]

Tiny model (``MovingBGConfig.tiny()``, random weights), one clip of ``--frames`` frames sampled with
DDIM, CFG 3.5, for both settings of ``uncond_drops_reference``. With the bank dropped in the
unconditional branch, batched mode runs ``[cond ; uncond]`` in one call and the unconditional half
attends without the bank through the model's per-sample ``reference_keep`` switch (before that
switch existed, batched mode fell back to two calls here, i.e. it cost what sequential costs).

Every (mode, setting, repeat) runs in its own process. Wall time per step = median over the steps
after the first (warm-up); the batched / sequential ratio is the median of the ratios of runs done
back to back (robust to a busy machine); peak memory = highest RSS (CPU, sampled every 2 ms)
or ``torch.cuda.max_memory_allocated`` (CUDA) during sampling minus the value just before it, i.e.
the per-step working memory (activations) plus the reference bank, not the weights. Prints both
modes side by side and batched / sequential ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_long_video import _PeakRSS, _rss_bytes  # noqa: E402

MODES = ("batched", "sequential")
DROPS = (True, False)


class _PeakCUDA:
    """``torch.cuda.max_memory_allocated`` over the block (context manager); ``peak`` in bytes."""

    def __enter__(self) -> "_PeakCUDA":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.before = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        torch.cuda.synchronize()
        self.peak = torch.cuda.max_memory_allocated()


def worker(mode: str, drop: bool, args: argparse.Namespace) -> dict:
    """Sample one clip in this process; returns its figures."""
    import logging

    import torch

    from movingbg.models.config import MovingBGConfig
    from movingbg.models.generator import MovingBGModel
    from movingbg.pipelines import GenerationOptions, generate

    logging.getLogger("diffusers").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MovingBGModel(MovingBGConfig.tiny()).eval().to(device)
    g = torch.Generator().manual_seed(1)
    size, frames = args.size, args.frames
    inputs = dict(ref_latent=torch.randn(1, 4, size, size, generator=g),
                  clip_embeds=torch.randn(1, 1, model.config.cross_attention_dim, generator=g),
                  pose_maps=torch.rand(frames, 3, 8 * size, 8 * size, generator=g),
                  track_maps=torch.rand(frames, 3, 8 * size, 8 * size, generator=g))
    options = GenerationOptions(steps=args.steps, cfg_scale=3.5, clip_length=frames, handover="latent", seed=7,
                                cfg_mode=mode, uncond_drops_reference=drop)
    stamps = []

    def on_step(_clip: int, _step: int, _steps: int) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    cuda = device.type == "cuda"
    before = None if cuda else _rss_bytes()
    with (_PeakCUDA() if cuda else _PeakRSS()) as peak:
        stamps.append(time.perf_counter())
        res = generate(model, num_frames=frames, options=options, on_step=on_step, device=device, **inputs)
    base = peak.before if cuda else before
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    return dict(mode=mode, drop=drop, step_ms=1000 * statistics.median(steps[1:] or steps),
                peak_mib=(peak.peak - base) / 2 ** 20, unet_calls_per_step=res.unet_calls / len(steps),
                batched=res.cfg_batched, checksum=float(res.latents.double().abs().sum()))


def _spawn(mode: str, drop: bool, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, str(int(drop)), "--frames", str(args.frames),
           "--steps", str(args.steps), "--size", str(args.size), "--threads", str(args.threads),
           "--device", args.device]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24, help="frames of the clip (one U-Net call = this many)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--size", type=int, default=8, help="latent size (pixels = 8x)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--worker", nargs=2, metavar=("MODE", "DROP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], bool(int(args.worker[1])), args)))
        return
    runs: dict[tuple[str, bool], list[dict]] = {(m, d): [] for m in MODES for d in DROPS}
    for rep in range(args.repeats):       # interleaved and paired, so load changes hit both modes alike
        for drop in DROPS:
            for mode in MODES:
                runs[(mode, drop)].append(r := _spawn(mode, drop, args))
                print(f"  [{rep + 1}/{args.repeats}] {mode:10} drop_ref={drop!s:5} {r['step_ms']:8.1f} ms/step  "
                      f"peak +{r['peak_mib']:.1f} MiB  {r['unet_calls_per_step']:.0f} call(s)/step", flush=True)
    print(f"\nCFG per step: one clip of {args.frames} frames, tiny model, latent {args.size}x{args.size}, "
          f"DDIM {args.steps} steps, CFG 3.5, {args.device}, {args.threads} thread(s), {args.repeats} repeat(s): "
          f"wall = best, memory = median, ratio = median of the per-repeat batched / sequential pairs")
    print(f"{'uncond drops reference':24}{'':22}{'batched':>12}{'sequential':>12}{'batch/seq':>11}")
    for drop in DROPS:
        b, s = runs[("batched", drop)], runs[("sequential", drop)]
        for label, key, pick, fmt in (("wall ms / step", "step_ms", min, "{:.1f}"),
                                      ("peak MiB", "peak_mib", statistics.median, "{:.1f}"),
                                      ("U-Net calls / step", "unet_calls_per_step", max, "{:.0f}")):
            ratio = statistics.median(x[key] / y[key] for x, y in zip(b, s))
            print(f"{str(drop):24}{label:22}{fmt.format(pick(x[key] for x in b)):>12}"
                  f"{fmt.format(pick(y[key] for y in s)):>12}{ratio:>11.2f}")
        rel = abs(b[0]["checksum"] - s[0]["checksum"]) / max(s[0]["checksum"], 1e-12)
        print(f"{'':24}{'same latents (sum|x|)':22}{'rel. diff':>12}{rel:>12.1e}")


if __name__ == "__main__":
    main()
