"""Training throughput at the tiny config: 1 and 2 processes, and the data-loading share of step time.

Builds a small prepared cache of synthetic clips (``python -m movingbg.prepare`` on ground-truth pose)
and a tiny VAE in a temporary folder, then runs ``python -m movingbg.train`` as real processes:

  * 1 process, 1 thread;  * 1 process, all cores;  * 2 processes (``torchrun``, gloo DDP on the CPU,
    or NCCL with ``--device cuda``), cores shared;  * 1 process, all cores, ``cache_latents`` on (each
    frame VAE-encoded once instead of at every step; the ratio to the uncached run is printed).

Figures come from the trainer's own log (steps after the first): global samples per second and the
share of step time spent waiting for the data loader (must stay under 10 % at this size). The raw
speed of the data pipeline alone (``ClipDataset`` items per second in one process) is printed too.

Usage:
    python benchmarks/bench_train.py                 # 64 x 64, 8-frame clips, 12 steps per case
    python benchmarks/bench_train.py --size 128 --frames 16 --steps 20 --workers 2
    python benchmarks/bench_train.py --vae taesd --batch 4     # the miniature reproduction's setting
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAST = re.compile(r"step (\d+)/(\d+) loss \S+ lr \S+ \(([0-9.]+) samples/s, data ([0-9.]+)% of step time\)")


def build_workspace(root: Path, size: int, videos: int, frames: int, vae_kind: str = "kl") -> dict[str, Path]:
    import torch
    from diffusers import AutoencoderKL

    from movingbg.io.video import write_video
    from movingbg.prepare import PrepareOptions, prepare_folder
    from movingbg.preprocess.pose_format import FramePose, PersonPose, to_pose_keypoint
    from movingbg.synth.scene import make_clip

    for seed in range(videos):
        clip = make_clip(seed=seed, num_frames=frames, width=size, height=size)
        write_video(root / "videos" / f"clip{seed}.mp4", clip.frames, 12.0, crf=10)
        poses = [FramePose(size, size, (PersonPose(kp),)) for kp in clip.keypoints]
        (root / "videos" / f"clip{seed}.pose.json").write_text(json.dumps(to_pose_keypoint(poses)))
    prepare_folder(root / "videos", root / "cache", PrepareOptions(width=size, height=size, pose="none"),
                   workers=2, progress=False)
    torch.manual_seed(0)
    if vae_kind == "taesd":  # the miniature model's VAE shape (2.4 M parameters, 64 channels at full size)
        from movingbg.models.vae import build_taesd, save_taesd

        save_taesd(build_taesd(), root / "vae.safetensors")
        return {"data": root / "cache", "vae": root / "vae.safetensors"}
    vae = AutoencoderKL(block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=8,
                        latent_channels=4, sample_size=size)
    vae.save_pretrained(str(root / "vae"))
    return {"data": root / "cache", "vae": root / "vae"}


def run_case(ws: dict[str, Path], out: Path, args, procs: int, threads: int, cache: bool = False) -> dict:
    cfg = {"data_dir": str(ws["data"]), "output_dir": str(out), "vae": str(ws["vae"]), "model": "tiny",
           "clip_length": args.frames, "width": args.size, "height": args.size, "max_steps": args.steps,
           "checkpoint_every": 10 ** 6, "num_workers": args.workers, "torch_threads": threads, "progress": False,
           "log_every": args.steps, "learning_rate": 1e-4, "batch_size": args.batch, "resume": "none",
           "cache_latents": cache}
    path = out.with_suffix(".json")
    path.write_text(json.dumps(cfg))
    launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc_per_node", str(procs)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run([*launcher, "-m", "movingbg.train", "--config", str(path)], cwd=str(ROOT), env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    found = LAST.findall(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"training failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    _step, _total, sps, data = found[-1]
    return {"procs": procs, "threads": threads, "cache": cache, "samples_per_s": float(sps), "data_pct": float(data),
            "wall_s": wall}


def data_speed(ws: dict[str, Path], args) -> float:
    from movingbg.train.data import ClipDataset, DataOptions

    ds = ClipDataset(str(ws["data"]), DataOptions(clip_length=args.frames, width=args.size, height=args.size))
    ds[0]
    t0 = time.perf_counter()
    n = 40
    for i in range(1, n + 1):
        ds[i]
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64, help="training width = height (multiple of 32)")
    ap.add_argument("--frames", type=int, default=8, help="clip length")
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per case")
    ap.add_argument("--batch", type=int, default=1, help="batch size per process")
    ap.add_argument("--workers", type=int, default=1, help="data-loader workers per process")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--vae", choices=("kl", "taesd"), default="kl",
                    help="frozen VAE: a tiny AutoencoderKL (8-16 channels) or the miniature model's TAESD shape")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="movingbg-bench-train-") as tmp:
        root = Path(tmp)
        ws = build_workspace(root, args.size, args.videos, max(24, 2 * args.frames), args.vae)
        items = data_speed(ws, args)
        cases = [(1, 1, False), (1, cores, False), (2, max(1, cores // 2), False), (1, cores, True)]
        rows = [run_case(ws, root / f"run{i}", args, p, t, c) for i, (p, t, c) in enumerate(dict.fromkeys(cases))]
    print(f"\nMovingBG training, tiny config, {args.size}x{args.size}, {args.frames}-frame clips, "
          f"batch {args.batch}/process, {args.workers} loader worker(s)/process, {args.steps} steps, {args.vae} VAE, "
          f"{cores} CPU cores (torch {_torch_version()})")
    print(f"data pipeline alone: {items:.1f} samples/s in one process (decode + crop + pose/track renders)\n")
    print(f"{'processes':>9} {'threads/proc':>12} {'latents':>8} {'samples/s':>10} {'data wait % of step':>20} "
          f"{'wall s':>7}")
    for r in rows:
        print(f"{r['procs']:>9} {r['threads']:>12} {'cached' if r['cache'] else 'encoded':>8} "
              f"{r['samples_per_s']:>10.2f} {r['data_pct']:>20.1f} {r['wall_s']:>7.1f}")
    plain = next(r for r in rows if r["procs"] == 1 and r["threads"] == cores and not r["cache"])
    cached = next(r for r in rows if r["cache"])
    print(f"\ncache_latents: {cached['samples_per_s'] / plain['samples_per_s']:.2f}x the samples/s of encoding "
          f"every step (1 process, {cores} threads)")
    worst = max(r["data_pct"] for r in rows)
    print(f"\ndata-loading share: max {worst:.1f}% ({'OK, < 10%' if worst < 10 else 'ABOVE the 10% budget'})")
    return 0 if worst < 10 else 1


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    sys.exit(main())
