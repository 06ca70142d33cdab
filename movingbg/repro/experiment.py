"""The miniature reproduction: data, VAE, five trained models, evaluation, results table.

Stages (each writes into ``workdir`` and is skipped when its output exists, so an interrupted run
resumes where it stopped):

1. ``videos/`` + ``cache/``: the training split of the synthetic world, prepared by
   ``movingbg.prepare`` exactly as a user's videos would be (ground-truth pose sidecars, pose-seeded
   GrabCut matte, KLT background tracks).
2. ``vae.safetensors``: a TAESD-shaped VAE trained on the training frames (ComfyUI-loadable).
3. ``runs/<variant>/``: the full model and the paper's ablations, each trained with
   ``python -m movingbg.train`` from the same seed and for the same number of steps.
4. ``eval/<variant>/``: every model generates every test clip (reference = its first frame, driving
   = its ground-truth pose renders and background tracks) and is scored with :mod:`movingbg.eval`;
   the full model also with one input withheld at inference (:data:`TEST_TIME`).
5. ``results.json`` + ``results.md``: the table (means over test clips).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .world import TEST_SEED0, world_clip, write_videos

logger = logging.getLogger(__name__)

__all__ = ["VARIANTS", "TEST_TIME", "ReproOptions", "run", "train_vae_stage", "evaluate_variant", "format_results"]

VARIANTS: Mapping[str, dict[str, Any]] = {
    "full": {},
    "no_fg": {"use_fg": False},
    "no_bg": {"use_bg": False},
    "no_global": {"use_reference": False},
    "sliding_window": {"use_concat": False},
}
"""The paper's Table 2: the full model and one part removed at a time. ``sliding_window`` is trained
without condition concatenation and generates with overlapping windows and latent averaging."""

TEST_TIME: Mapping[str, dict[str, Any]] = {
    "tt_no_pose": {"fg_scale": 0.0},
    "tt_no_tracks": {"bg_scale": 0.0},
    "tt_no_reference": {"reference": False},
    "tt_sliding_window": {"method": "sliding_window"},
    "full_latent_handover": {"handover": "latent"},
}
"""Test-time ablations of the trained full model: one input withheld at inference (pose maps, track
maps, the reference bank), the sliding-window sampler instead of the progressive one, or the latent
handover between clips instead of decode -> encode (issue 4's drift question). Cheap (no training),
they show which inputs the trained model actually uses; the paper's Table 2 retrains instead
(:data:`VARIANTS`)."""

_LABELS = {"full": "MovingBG (full)", "no_fg": "w/o foreground encoder", "no_bg": "w/o background encoder",
           "no_global": "w/o global features", "sliding_window": "w/o condition concat (sliding window)",
           "full_latent_handover": "full model, latent handover (no VAE round trip)",
           "tt_no_pose": "full model, pose maps withheld", "tt_no_tracks": "full model, track maps withheld",
           "tt_no_reference": "full model, reference bank withheld",
           "tt_sliding_window": "full model, sliding window instead of progressive"}


@dataclass(frozen=True)
class ReproOptions:
    """Size of the experiment. The defaults are the README's table (five models of 2,000 steps on 48 videos,
    trained two at a time: about an hour on 2 CPU cores, evaluation included); tests run it with a few steps.

    Attributes:
        size: frame width = height in px (multiple of 32).
        train_videos, train_frames: training split (seeds ``0 .. train_videos - 1``).
        test_videos, test_frames: test split (seeds from :data:`~.world.TEST_SEED0`).
        clip_length: training clip and generation clip length (the sliding window uses it too, with
            ``overlap`` frames of overlap).
        vae_steps, vae_batch, vae_crop: VAE training.
        vae: a TAESD-shaped VAE file (``movingbg_vae_scale_factor`` in its metadata) to use instead of
            training one, e.g. the shipped ``movingbg_mini_vae.safetensors``: models trained on more videos
            then stay compatible with it (the shipped model was trained so).
        train_steps, batch_size, learning_rate, ema_decay: each model's training.
        encoder_channels: widths of the pose and track encoders (the SD1.5 model's are 16/32/96/256;
            at 64 x 64 those took half of a CPU training step).
        anchor_tracks: the trainer's ``anchor_tracks`` (draw only tracks seen in a clip's condition frame).
        track_trail: the models' ``MovingBGConfig.track_trail`` (track maps draw each point's last
            ``track_trail`` positions; ``clip_length - 1`` reaches back to the clip's condition frame).
        sample_steps, cfg_scale: generation.
        num_tracks: guidance tracks per test clip.
        threads: torch threads in all; parallel: models trained at the same time (in rounds of
            ``parallel``, each round's models sharing ``threads``: on a small CPU two 1-thread trainings do
            ~45 % more work than one 2-thread training, and a round's lone model gets them all); seed: everything.
        variants: which rows to run; test_time: also the test-time ablations of the full model
            (:data:`TEST_TIME`).
    """

    size: int = 64
    train_videos: int = 48
    train_frames: int = 32
    test_videos: int = 6
    test_frames: int = 40
    clip_length: int = 8
    overlap: int = 2
    vae_steps: int = 300
    vae_batch: int = 8
    vae_crop: int = 32
    vae: str = ""
    train_steps: int = 2000
    batch_size: int = 4
    learning_rate: float = 5e-4
    encoder_channels: tuple[int, ...] = (8, 16, 32, 64)
    track_trail: int = 0
    anchor_tracks: bool = False
    ema_decay: float = 0.998
    sample_steps: int = 20
    cfg_scale: float = 1.0
    num_tracks: int = 40
    threads: int = 2
    parallel: int = 2
    seed: int = 0
    variants: tuple[str, ...] = tuple(VARIANTS)
    test_time: bool = True

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"variants: unknown {unknown}; known: {list(VARIANTS)}")
        if self.size % 32 or self.size < 32:
            raise ValueError(f"size must be a multiple of 32 (>= 32), got {self.size}")
        if not 2 <= self.clip_length <= 32:
            raise ValueError(f"clip_length must be in 2..32, got {self.clip_length}")
        if self.test_frames < self.clip_length or self.train_frames < self.clip_length + 1:
            raise ValueError("test_frames must be >= clip_length and train_frames > clip_length")


def _json_write(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


# ---- stage 1 + 2 ------------------------------------------------------------------------------
def data_stage(workdir: Path, o: ReproOptions) -> Path:
    from ..prepare import PrepareOptions, prepare_folder

    cache = workdir / "cache"
    if (cache / ".complete").is_file():
        return cache
    write_videos(workdir / "videos", range(o.train_videos), o.train_frames, o.size)
    report = prepare_folder(workdir / "videos", cache,
                            PrepareOptions(width=o.size, height=o.size, pose="none", num_points=100, crf=4),
                            workers=1, progress=False)
    failed = getattr(report, "failed", None)
    if failed:
        raise RuntimeError(f"preparing the synthetic videos failed: {failed}")
    (cache / ".complete").write_text("ok\n")
    return cache


def train_vae_stage(workdir: Path, o: ReproOptions) -> tuple[Path, dict]:
    from ..models.vae import save_taesd
    from ..train.vae import VAETrainOptions, train_taesd

    path, info_path = workdir / "vae.safetensors", workdir / "vae.json"
    if not o.vae and path.is_file() and info_path.is_file():
        return path, json.loads(info_path.read_text())
    held = np.concatenate([world_clip(TEST_SEED0 + s, 4, o.size).frames for s in range(o.test_videos)])
    if o.vae:
        return Path(o.vae), _given_vae_info(Path(o.vae), held)
    frames = np.concatenate([world_clip(s, o.train_frames, o.size).frames[::2] for s in range(o.train_videos)])
    t0 = time.perf_counter()
    res = train_taesd(frames, VAETrainOptions(steps=o.vae_steps, batch=o.vae_batch, crop=o.vae_crop,
                                              learning_rate=5e-4, seed=o.seed), held_out=held)
    info = {"psnr_test_db": res.psnr, "latent_std": res.latent_std, "vae_scale_factor": 1.0 / res.latent_std,
            "steps": o.vae_steps, "seconds": time.perf_counter() - t0, "train_frames": int(len(frames))}
    save_taesd(res.vae, path, metadata={"movingbg_vae_scale_factor": f"{1.0 / res.latent_std:.6f}"})
    _json_write(info_path, info)
    logger.info("VAE: %.2f dB on test frames, latent std %.4f (%.0f s)", res.psnr, res.latent_std, info["seconds"])
    return path, info


def _given_vae_info(path: Path, held: np.ndarray) -> dict:
    """``vae.json``'s fields for a VAE that was not trained here (``ReproOptions.vae``)."""
    from safetensors import safe_open

    from ..train.encoders import load_vae
    from ..train.vae import reconstruction_psnr

    if not path.is_file() or path.suffix != ".safetensors":
        raise ValueError(f"vae: {path} is not a .safetensors file (expected a TAESD-shaped .safetensors, e.g. "
                         "movingbg/assets/models/vae/movingbg_mini_vae.safetensors)")
    with safe_open(str(path), "pt") as f:
        scale = (f.metadata() or {}).get("movingbg_vae_scale_factor")
    if scale is None:
        raise ValueError(f"vae: {path} has no 'movingbg_vae_scale_factor' in its metadata (a VAE written by "
                         "python -m movingbg.repro or movingbg.train.vae has it)")
    return {"psnr_test_db": reconstruction_psnr(load_vae(path), held), "vae_scale_factor": float(scale),
            "file": str(path)}


# ---- stage 3 ----------------------------------------------------------------------------------
def model_config(o: ReproOptions, variant: str, vae_scale_factor: float):
    from ..models.config import MovingBGConfig

    return MovingBGConfig.tiny(prediction_type="v_prediction", beta_schedule="linear",
                               vae_scale_factor=float(vae_scale_factor), encoder_channels=o.encoder_channels,
                               track_trail=o.track_trail, **VARIANTS[variant])


def bundle_path(workdir: Path, variant: str) -> Path:
    """Where :func:`train_stage` writes ``variant``'s bundle (its ``.json`` sidecar beside it)."""
    return workdir / "runs" / variant / "movingbg_mini.safetensors"


def train_stage(workdir: Path, o: ReproOptions, variant: str, vae: Path, vae_scale_factor: float,
                threads: int) -> Path:
    """Train ``variant`` with ``python -m movingbg.train`` in a subprocess using ``threads`` torch threads;
    its bundle (an existing one is returned as is)."""
    bundle = bundle_path(workdir, variant)
    out = bundle.parent
    if bundle.is_file():
        return bundle
    out.mkdir(parents=True, exist_ok=True)
    cfg = {
        "data_dir": str(workdir / "cache"), "output_dir": str(out), "vae": str(vae),
        "model": model_config(o, variant, vae_scale_factor).to_dict(), "init": "none",
        "clip_length": o.clip_length, "width": o.size, "height": o.size, "tracks_range": [5, 50],
        "learning_rate": o.learning_rate, "lr_warmup_steps": min(50, o.train_steps // 4),
        "batch_size": o.batch_size, "max_steps": o.train_steps, "weight_decay": 0.0,
        "blank_condition_prob": 0.1, "drop_joint_prob": 0.1, "seed": o.seed,
        "checkpoint_every": max(50, min(250, o.train_steps // 4)), "keep_last": 1, "resume": "auto",
        "log_every": max(1, o.train_steps // 20), "progress": False, "num_workers": 1,
        "torch_threads": max(1, threads), "export_name": bundle.name,
        "export_dtype": "fp16", "cache_latents": True, "ema_decay": o.ema_decay, "anchor_tracks": o.anchor_tracks,
    }
    cfg_path = out / "train.json"
    _json_write(cfg_path, cfg)
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg["torch_threads"]))
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    with open(out / "train.log", "a") as log:
        proc = subprocess.run([sys.executable, "-m", "movingbg.train", "--config", str(cfg_path)], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not bundle.is_file():
        tail = (out / "train.log").read_text()[-3000:]
        raise RuntimeError(f"training {variant} failed (exit {proc.returncode}); log tail:\n{tail}")
    _json_write(out / "train_time.json", {"seconds": time.perf_counter() - t0})
    logger.info("trained %s in %.0f s", variant, time.perf_counter() - t0)
    return bundle


# ---- stage 4 ----------------------------------------------------------------------------------
def driving_inputs(seed: int, o: ReproOptions) -> dict[str, Any]:
    """Driving clip ``seed`` with its guidance: pose renders and background tracks (drawn into maps by
    :func:`generate_video` the way the model was trained)."""
    return world_inputs(seed, o.test_frames, o.size, o.num_tracks)


def world_inputs(seed: int, frames: int, size: int, num_tracks: int, figure: bool = True) -> dict[str, Any]:
    """Clip ``seed`` of the world (``figure=False``: the same camera over the background alone) with its
    pose renders (black without the figure) and ``num_tracks`` ground-truth background tracks from a
    10 x 10 grid."""
    from ..preprocess.pose_format import FramePose, PersonPose
    from ..preprocess.pose_render import render_pose
    from ..preprocess.tracks import select_tracks
    from ..synth.scene import gt_tracks

    clip = world_clip(seed, frames, size, figure=figure)
    step = size / 10.0
    g = np.arange(step / 2, size, step)
    points = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    tracks = gt_tracks(clip, points)
    tracks = select_tracks(tracks, min(num_tracks, tracks.num_tracks), np.random.default_rng(seed))
    if figure:
        pose = np.stack([render_pose(FramePose(size, size, (PersonPose(kp),))) for kp in clip.keypoints])
    else:
        pose = np.zeros((clip.num_frames, size, size, 3), np.uint8)
    return {"clip": clip, "tracks": tracks, "pose_maps": pose}


def _maps(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255.0


def generate_video(model, vae, inputs: Mapping[str, Any], o: ReproOptions, *, method: str = "progressive",
                   use_pose: bool = True, use_tracks: bool = True, handover: str = "decode_encode",
                   fg_scale: float = 1.0, bg_scale: float = 1.0) -> np.ndarray:
    """Generate the driving clip of ``inputs`` with ``model``; ``(T, H, W, 3)`` uint8."""
    from ..pipelines import GenerationOptions, SchedulerOptions, generate, sliding_window_generate
    from ..preprocess.track_render import render_tracks
    from ..train.encoders import decode_latents, encode_latents

    cfg = model.config
    scale = float(cfg.vae_scale_factor)
    clip = inputs["clip"]
    ref = torch.from_numpy(clip.frames[0]).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    ref_latent = encode_latents(vae, ref, scale)
    options = GenerationOptions(
        steps=o.sample_steps, cfg_scale=o.cfg_scale, seed=o.seed, clip_length=o.clip_length, cfg_mode="sequential",
        handover=handover, fg_scale=fg_scale, bg_scale=bg_scale,
        scheduler=SchedulerOptions(prediction_type=cfg.prediction_type, beta_schedule=cfg.beta_schedule,
                                   rescale_betas_zero_snr=cfg.prediction_type == "v_prediction"))

    def encode(images: torch.Tensor) -> torch.Tensor:
        return encode_latents(vae, images * 2.0 - 1.0, scale)

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return decode_latents(vae, latents, scale)

    kwargs = dict(ref_latent=ref_latent, clip_embeds=None,
                  pose_maps=_maps(inputs["pose_maps"]) if use_pose and cfg.use_fg else None,
                  track_maps=(_maps(render_tracks(inputs["tracks"], trail=cfg.track_trail))
                              if use_tracks and cfg.use_bg else None),
                  num_frames=clip.num_frames, options=options, encode=encode, decode=decode)
    with torch.no_grad():
        if method == "sliding_window":
            result = sliding_window_generate(model, **kwargs, window=o.clip_length, overlap=o.overlap)
        else:
            result = generate(model, **kwargs)
        video = decode(result.latents)
    return (video.permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


def score_video(video: np.ndarray, inputs: Mapping[str, Any], clip_length: int, metrics: Sequence[str]) -> dict:
    """:func:`movingbg.eval.evaluate` of a video generated (or made) for the clip of ``inputs`` (reference = its
    first frame, ground truth = its frames, its guidance tracks and matte; no downloads)."""
    from ..eval import evaluate

    clip = inputs["clip"]
    return evaluate(video, reference=clip.frames[0], gt=clip.frames, guidance=inputs["tracks"], alpha=clip.alpha,
                    clip_length=clip_length, metrics=metrics, allow_download=False)


@contextmanager
def _reference_withheld(model, withheld: bool):
    """Generate without global features from a model that has them (test-time ablation)."""
    ref = model.reference_unet
    if withheld:
        model.reference_unet = None
    try:
        yield model
    finally:
        model.reference_unet = ref


def evaluate_variant(workdir: Path, o: ReproOptions, variant: str, bundle: Path, vae_path: Path, *,
                     method: Optional[str] = None, handover: str = "decode_encode", fg_scale: float = 1.0,
                     bg_scale: float = 1.0, reference: bool = True) -> dict[str, Any]:
    from ..io.video import write_video
    from ..models.bundle import load_bundle
    from ..train.encoders import load_vae

    out = workdir / "eval" / variant
    summary_path = out / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(o.threads)
    model = load_bundle(bundle, dtype=torch.float32).eval()
    vae = load_vae(vae_path)
    method = method or ("sliding_window" if variant == "sliding_window" else "progressive")
    per_clip = []
    metrics = ("psnr", "ssim", "lpips", "background_motion", "boundary_continuity", "drift")
    for k in range(o.test_videos):
        seed = TEST_SEED0 + k
        inp = driving_inputs(seed, o)
        clip = inp["clip"]
        t0 = time.perf_counter()
        with _reference_withheld(model, not reference):
            video = generate_video(model, vae, inp, o, method=method, handover=handover, fg_scale=fg_scale,
                                   bg_scale=bg_scale)
        seconds = time.perf_counter() - t0
        write_video(out / f"clip{seed}.mp4", np.concatenate([clip.frames, video], axis=2), 12.0, crf=12)
        res = score_video(video, inp, o.clip_length, metrics)
        row = {name: (r.value if r.status == "ok" else None) for name, r in res.items()}
        row["skipped"] = {name: r.reason for name, r in res.items() if r.status != "ok"}
        drift = res.get("drift")
        if drift is not None and drift.status == "ok":
            row["color_shift_last"] = float(drift.details["color_shift_last"])
        cont = res.get("boundary_continuity")
        if cont is not None and cont.status == "ok":
            row["boundary_across"] = float(cont.details["across"])
        row["seed"], row["seconds"] = seed, seconds
        per_clip.append(row)
    keys = [k for k in per_clip[0] if k not in ("skipped", "seed")]
    summary = {"variant": variant, "method": method, "handover": handover, "fg_scale": fg_scale,
               "bg_scale": bg_scale, "reference": reference, "clips": per_clip,
               "mean": {k: (float(np.mean([r[k] for r in per_clip])) if all(r[k] is not None for r in per_clip)
                            else None) for k in keys},
               "skipped": per_clip[0]["skipped"]}
    _json_write(summary_path, summary)
    return summary


# ---- stage 5 ----------------------------------------------------------------------------------
_COLUMNS = (("psnr", "PSNR dB ↑", "{:.2f}"), ("ssim", "SSIM ↑", "{:.3f}"), ("lpips", "LPIPS ↓", "{:.3f}"),
            ("background_motion", "BG motion EPE px ↓", "{:.2f}"),
            ("boundary_continuity", "seam ratio (→1)", "{:.2f}"),
            ("color_shift_last", "colour shift, last frame ↓", "{:.2f}"),
            ("drift", "drift dE/frame (→0)", "{:+.3f}"))


def format_results(results: Mapping[str, Any]) -> str:
    """Markdown table of ``results["variants"]`` (means over test clips)."""
    head = "| model | " + " | ".join(c[1] for c in _COLUMNS) + " |"
    lines = [head, "|---" * (len(_COLUMNS) + 1) + "|"]
    for name, summary in results["variants"].items():
        cells = []
        for key, _label, fmt in _COLUMNS:
            v = summary["mean"].get(key)
            cells.append("skipped" if v is None else fmt.format(v))
        lines.append(f"| {_LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(workdir: os.PathLike | str, options: ReproOptions = ReproOptions(),
        log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Run (or resume) the whole experiment in ``workdir``; returns the results dict also written to
    ``results.json`` (and the table to ``results.md``)."""
    say = log or logger.info
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    say("data: synthetic training split + movingbg.prepare")
    data_stage(wd, options)
    say("VAE: TAESD-shaped, trained on the training frames")
    vae, vae_info = train_vae_stage(wd, options)
    from concurrent.futures import ThreadPoolExecutor

    todo = [v for v in options.variants if not bundle_path(wd, v).is_file()]
    width = max(1, options.parallel)
    for start in range(0, len(todo), width):  # rounds of `parallel` models sharing the threads
        group = todo[start:start + width]
        threads = max(1, options.threads // len(group))
        say(f"train: {', '.join(group)} ({threads} thread{'s' * (threads > 1)} each)")
        with ThreadPoolExecutor(max_workers=len(group)) as pool:  # each training is a subprocess
            list(pool.map(lambda v: train_stage(wd, options, v, vae, vae_info["vae_scale_factor"], threads), group))
    bundles = {v: bundle_path(wd, v) for v in options.variants}
    variants = {}
    for variant in options.variants:
        say(f"evaluate: {variant}")
        variants[variant] = evaluate_variant(wd, options, variant, bundles[variant], vae)
    if "full" in options.variants and options.test_time:
        for name, kwargs in TEST_TIME.items():
            say(f"evaluate: {_LABELS[name]}")
            variants[name] = evaluate_variant(wd, options, name, bundles["full"], vae, **kwargs)
    results = {"options": asdict(options), "vae": vae_info, "variants": variants,
               "train_seconds": {v: json.loads((wd / "runs" / v / "train_time.json").read_text())["seconds"]
                                 if (wd / "runs" / v / "train_time.json").is_file() else None
                                 for v in options.variants},
               "torch": torch.__version__, "seconds": time.perf_counter() - t0}
    _json_write(wd / "results.json", results)
    (wd / "results.md").write_text(format_results(results) + "\n")
    return results
