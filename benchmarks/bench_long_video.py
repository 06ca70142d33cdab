"""Long-video generation: progressive clips (the paper) vs the sliding-window baseline, side by side.

    python benchmarks/bench_long_video.py [--frames 96] [--memory-frames 48 96 192] [--steps 4]
                                          [--size 8] [--threads 1]

Tiny model (``MovingBGConfig.tiny()``, random weights: the same work as a trained tiny model), CPU.
Progressive: clips of 24 frames, each later clip conditioned on the previous clip's last frame.
Sliding window: windows of 24 frames overlapping by 4, predictions averaged every step.
Both with CFG (scale 3.5, the unconditional branch drops the reference, as Moore-AnimateAnyone).

Each (method, frame count) runs in its own process. Peak memory = highest RSS (sampled every 2 ms
by a thread reading /proc/self/statm) during the generate call minus the RSS just before it, so it
counts the generator's working memory, not the model, imports or the caller's input maps. Prints
U-Net work and wall time per output frame, reference U-Net runs per video, peak memory for each
length, and sliding / progressive ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLIP = 24
OVERLAP = 4


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRSS:
    """Background sampler of the process RSS (context manager); ``peak`` in bytes."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> "_PeakRSS":
        self.peak = _rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def worker(method: str, frames: int, steps: int, size: int, threads: int) -> dict:
    """One generate call in this process; returns its figures."""
    import logging

    import torch

    from movingbg.models.config import MovingBGConfig
    from movingbg.models.generator import MovingBGModel
    from movingbg.pipelines import GenerationOptions, generate, sliding_window_generate

    logging.getLogger("diffusers").setLevel(logging.ERROR)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = MovingBGModel(MovingBGConfig.tiny()).eval()
    g = torch.Generator().manual_seed(1)
    inputs = dict(ref_latent=torch.randn(1, 4, size, size, generator=g),
                  clip_embeds=torch.randn(1, 1, model.config.cross_attention_dim, generator=g),
                  pose_maps=torch.rand(frames, 3, 8 * size, 8 * size, generator=g),
                  track_maps=torch.rand(frames, 3, 8 * size, 8 * size, generator=g))
    options = GenerationOptions(steps=steps, cfg_scale=3.5, clip_length=CLIP, handover="latent", seed=7)
    extra = {} if method == "progressive" else dict(window=CLIP, overlap=OVERLAP)
    fn = generate if method == "progressive" else sliding_window_generate
    before = _rss_bytes()
    with _PeakRSS() as peak:
        t0 = time.perf_counter()
        res = fn(model, num_frames=frames, options=options, **inputs, **extra)
        wall = time.perf_counter() - t0
    return dict(method=method, frames=frames, units=len(res.plan), unet_calls=res.unet_calls,
                frame_evals=res.unet_frame_evals, reference_runs=res.reference_runs, wall_s=wall,
                peak_mib=(peak.peak - before) / 2 ** 20, out_shape=list(res.latents.shape))


def _spawn(method: str, frames: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, str(frames), "--steps", str(args.steps),
           "--size", str(args.size), "--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def _print_tables(runs: dict[tuple[str, int], dict], args: argparse.Namespace) -> None:
    p, s = runs[("progressive", args.frames)], runs[("sliding", args.frames)]
    n = args.frames
    print(f"\n{n} frames, tiny model, latent {args.size}x{args.size}, {args.steps} steps, CFG 3.5, "
          f"{args.threads} thread(s)")
    print(f"{'':34}{'progressive':>14}{'sliding':>14}{'slide/prog':>12}")
    rows = [("clips / windows", "units", "{:.0f}"),
            ("U-Net calls", "unet_calls", "{:.0f}"),
            ("U-Net frame evals / output frame", None, "{:.2f}"),
            ("wall ms / output frame", None, "{:.1f}"),
            ("reference U-Net runs / video", "reference_runs", "{:.0f}")]
    for label, key, fmt in rows:
        if key is not None:
            a, b = p[key], s[key]
        elif label.startswith("U-Net"):
            a, b = p["frame_evals"] / n, s["frame_evals"] / n
        else:
            a, b = 1000 * p["wall_s"] / n, 1000 * s["wall_s"] / n
        ratio = f"{b / a:.2f}" if a else "-"
        print(f"{label:34}{fmt.format(a):>14}{fmt.format(b):>14}{ratio:>12}")
    print("\npeak working memory during generate (MiB above the RSS before the call)")
    print(f"{'frames':>8}{'progressive':>14}{'sliding':>14}{'slide/prog':>12}")
    for frames in args.memory_frames:
        a, b = runs[("progressive", frames)]["peak_mib"], runs[("sliding", frames)]["peak_mib"]
        print(f"{frames:>8}{a:>14.1f}{b:>14.1f}{(b / a if a > 0 else float('nan')):>12.2f}")
    first, last = args.memory_frames[0], args.memory_frames[-1]
    for method in ("progressive", "sliding"):
        a, b = runs[(method, first)]["peak_mib"], runs[(method, last)]["peak_mib"]
        print(f"{method}: {last} vs {first} frames peak memory x{(b / a if a > 0 else float('nan')):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--memory-frames", type=int, nargs="+", default=[48, 96, 192])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=8, help="latent size (pixels = 8x)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "FRAMES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.steps, args.size, args.threads)))
        return
    runs: dict[tuple[str, int], dict] = {}
    for frames in sorted(set(args.memory_frames) | {args.frames}):
        for method in ("progressive", "sliding"):
            runs[(method, frames)] = r = _spawn(method, frames, args)
            print(f"  {method:12} {frames:4d} frames: {r['wall_s']:6.1f} s, {r['unet_calls']} U-Net calls, "
                  f"peak +{r['peak_mib']:.1f} MiB", flush=True)
    _print_tables(runs, args)


if __name__ == "__main__":
    main()
