"""Which inputs does a trained model use? ``python -m movingbg.repro.probe MODEL --vae VAE``.

Generating and scoring a video (:mod:`.experiment`) takes minutes per clip and mixes every effect of
sampling; this probe asks one question per input, in seconds: noise clips of the synthetic test split
to timestep ``t``, let the model predict the clean latents (x0) in one step, and compare the error
with every input given against the error with one input withheld (track maps, pose maps, the
condition frame, the reference bank). An input the model uses raises the error when withheld; one it
ignores leaves it where it is (issue 6: the background encoder of the miniature model). One more row
gives each clip the track maps of another test clip (the next one): the same kind of input with the
wrong motion. A model that reads the motion in its tracks does worse with them than with its own; one
that only reacts to there being tracks at all does not.

The table also gives two model-free yardsticks that bracket what the tracks are worth: the error of
*copying the condition frame* into every frame (the condition used, the motion guidance not), and of
*warping the condition frame along the guidance tracks* (each frame = the condition frame moved by the
similarity transform -- shift, scale, rotation -- that the clip's guidance tracks imply since the
condition frame; the figure is moved with it, so read its background column). A model that reads its
tracks can get below the copy, towards the warp.
Errors are mean squared errors of scaled latents over the clip's frames after the condition frame,
on all latent pixels and on the background ones (no part of the figure in the latent pixel's 8 x 8
block).

``--generate`` adds the slow, end-to-end view: longer test clips generated clip by clip (sampling, VAE
round trips), scored like the reproduction table (PSNR, background-motion EPE of tracks re-extracted
from the video, seam ratio) with all inputs, with the track maps withheld and with the sliding window,
beside the same yardsticks as videos (frame 0 copied, frame 0 warped along the tracks) and the ground
truth itself (the floor of the EPE measurement).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from .world import TEST_SEED0

logger = logging.getLogger(__name__)

__all__ = ["ProbeOptions", "probe_inputs", "format_probe", "probe_clip", "warp_along_tracks", "WITHHELD", "SWAPPED",
           "generation_check", "format_generation"]

WITHHELD = ("track_maps", "pose_maps", "condition", "reference")
"""The inputs the probe withholds one at a time (each only when the model has it)."""
SWAPPED = "another clip's track_maps"
"""The control row: each clip driven by the next test clip's track maps (needs ``clips >= 2``)."""


@dataclass(frozen=True)
class ProbeOptions:
    """What the probe runs on.

    Attributes:
        clips: test clips (seeds ``TEST_SEED0 + k``).
        frames: frames per clip, condition frame included (one generation clip).
        size: frame size in pixels (the model's training size).
        timesteps: noise levels (0..999) of the one-step predictions.
        background_only: clips of the same world without the figure (the tracks are then the only motion cue).
        num_tracks: guidance tracks per clip.
        seed: seed of the noise (the noise of clip ``k`` at timestep ``t`` depends only on ``seed``, ``k``, ``t``).
    """

    clips: int = 6
    frames: int = 8
    size: int = 64
    timesteps: Sequence[int] = field(default=(900, 600, 300))
    background_only: bool = False
    num_tracks: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        for name, low in (("clips", 1), ("frames", 2), ("size", 8), ("num_tracks", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ProbeOptions.{name} must be an int >= {low}, got {value!r}")
        if self.size % 8:
            raise ValueError(f"ProbeOptions.size must be a multiple of 8, got {self.size}")
        ts = tuple(self.timesteps)
        if not ts or any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= 999 for t in ts):
            raise ValueError(f"ProbeOptions.timesteps must be ints in 0..999, got {self.timesteps!r}")
        object.__setattr__(self, "timesteps", ts)


def probe_clip(seed: int, o: ProbeOptions) -> dict[str, Any]:
    """Test clip ``seed`` with its guidance (:func:`.experiment.world_inputs`; without the figure when
    ``o.background_only``)."""
    from .experiment import world_inputs

    return world_inputs(seed, o.frames, o.size, o.num_tracks, figure=not o.background_only)


@torch.no_grad()
def probe_inputs(model, vae, o: ProbeOptions = ProbeOptions()) -> dict[str, Any]:
    """One-step x0 errors of ``model`` with all inputs and with each input withheld.

    Args:
        model: a :class:`~movingbg.models.generator.MovingBGModel` (eval mode, float32, CPU or GPU).
        vae: the VAE it was trained with (:func:`movingbg.train.encoders.load_vae`).
        o: :class:`ProbeOptions`.

    Returns:
        ``{"rows": {name: {t: [all, background]}}, "copy_condition": [all, background],
        "warp_condition": [all, background], "encoder_response": {maps: [change, output]}, "options": o}``;
        rows ``"all inputs"`` and ``"<input> withheld"`` for each of :data:`WITHHELD` the model has, and
        :data:`SWAPPED` (the next clip's track maps) when it has track maps and ``o.clips >= 2``;
        ``encoder_response``: for each motion encoder, the rms of how much its output changes when its maps
        are zeroed, and the rms of its output. A change near 0 with a clearly non-zero output is a dead
        encoder: its activations no longer carry the maps, so no gradient can teach it to read them.
    """
    from ..pipelines.sampling import make_scheduler
    from ..preprocess.track_render import render_tracks
    from ..train.encoders import encode_latents
    from .experiment import _maps

    def maps(a: np.ndarray) -> torch.Tensor:  # (F, H, W, 3) uint8 -> (1, 3, F, H, W) in 0..1
        return _maps(a).permute(1, 0, 2, 3)[None]

    def clip_latents(frames: np.ndarray) -> torch.Tensor:  # (F, H, W, 3) uint8 -> (1, 4, F, h, w) scaled
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return encode_latents(vae, x, scale).float().permute(1, 0, 2, 3)[None]

    cfg = model.config
    v_pred = cfg.prediction_type == "v_prediction"
    sched = make_scheduler("ddim", prediction_type=cfg.prediction_type, beta_schedule=cfg.beta_schedule,
                           rescale_betas_zero_snr=v_pred)
    scale = float(cfg.vae_scale_factor)
    device, dtype = model.device, model.dtype
    available = {"track_maps": cfg.use_bg, "pose_maps": cfg.use_fg, "condition": cfg.use_concat,
                 "reference": model.reference_unet is not None}
    variants = ["all inputs"] + [f"{name} withheld" for name in WITHHELD if available[name]]
    if cfg.use_bg and o.clips >= 2:
        variants.append(SWAPPED)
    sums: dict[str, dict[int, np.ndarray]] = {v: {t: np.zeros(2) for t in o.timesteps} for v in variants}
    copy, warp = np.zeros(2), np.zeros(2)
    encoders = {name: enc for name, enc in (("pose_maps", model.fg_encoder), ("track_maps", model.bg_encoder))
                if enc is not None}
    response = {name: np.zeros(2) for name in encoders}
    clips = [probe_clip(TEST_SEED0 + k, o) for k in range(o.clips)]
    track_maps = [maps(render_tracks(c["tracks"], trail=cfg.track_trail)) for c in clips]  # own; the next's = swapped
    for k, inp in enumerate(clips):
        clip = inp["clip"]
        x0 = clip_latents(clip.frames)
        z = x0[0].permute(1, 0, 2, 3)  # (F, 4, h, w)
        h, w = x0.shape[-2:]
        figure = torch.from_numpy(clip.alpha[1:]).float()[:, None]
        figure = torch.nn.functional.adaptive_max_pool2d(figure, (h, w))[:, 0]  # (F-1, h, w)
        bg = (figure < 0.05).float()[None, None]  # (1, 1, F-1, h, w)

        def errors(pred: torch.Tensor) -> np.ndarray:
            sq = (pred[:, :, 1:] - x0[:, :, 1:]) ** 2
            covered = float(bg.sum()) * sq.shape[1]  # no background pixel at all: undefined, not 0
            background = float((sq * bg).sum()) / covered if covered else float("nan")
            return np.array([float(sq.mean()), background])

        copy += errors(x0[:, :, :1].expand_as(x0))
        moved = warp_along_tracks(clip.frames[0], inp["tracks"])
        warp += errors(clip_latents(moved))
        inputs = {"cond_latent": z[:1], "pose_maps": maps(inp["pose_maps"]),
                  "track_maps": track_maps[k], SWAPPED: track_maps[(k + 1) % o.clips]}
        bank = model.encode_reference(z[:1].to(device, dtype)) if available["reference"] else None
        for name, encoder in encoders.items():
            x = inputs[name][0].permute(1, 0, 2, 3).to(device, dtype)  # (F, 3, H, W)
            out, blank = encoder(x).float(), encoder(torch.zeros_like(x)).float()
            response[name] += np.array([float((out - blank).pow(2).mean()), float(out.pow(2).mean())])
        for t in o.timesteps:
            # the noise of (clip, t) does not depend on which other timesteps are probed
            gen = torch.Generator().manual_seed(o.seed * 1_000_003 + k * 1_000 + t)
            noise = torch.randn(x0.shape, generator=gen)
            tt = torch.tensor([t])
            xt = sched.add_noise(x0, noise, tt)
            a = float(sched.alphas_cumprod[t]) ** 0.5
            s = (1.0 - float(sched.alphas_cumprod[t])) ** 0.5
            for variant in variants:
                kw = {"cond_latent": inputs["cond_latent"] if cfg.use_concat else None,
                      "pose_maps": inputs["pose_maps"] if cfg.use_fg else None,
                      "track_maps": inputs["track_maps"] if cfg.use_bg else None, "bank": bank}
                if variant == "condition withheld":
                    kw["cond_latent"] = None
                elif variant == "reference withheld":
                    kw["bank"] = None
                elif variant == SWAPPED:
                    kw["track_maps"] = inputs[SWAPPED]
                elif variant != "all inputs":
                    kw[variant.split()[0]] = None
                kw = {key: (val.to(device, dtype) if isinstance(val, torch.Tensor) else val) for key, val in kw.items()}
                out = model(xt.to(device, dtype), tt.to(device), **kw).float().cpu()
                pred = a * xt - s * out if v_pred else (xt - s * out) / max(a, 1e-4)
                sums[variant][t] += errors(pred)
    rows = {v: {t: (sums[v][t] / o.clips).tolist() for t in o.timesteps} for v in variants}
    return {"rows": rows, "copy_condition": (copy / o.clips).tolist(), "warp_condition": (warp / o.clips).tolist(),
            "encoder_response": {name: np.sqrt(v / o.clips).tolist() for name, v in response.items()}, "options": o}


def warp_along_tracks(frame: np.ndarray, tracks) -> np.ndarray:
    """``(F, H, W, 3)``: ``frame`` (the condition frame, frame 0 of ``tracks``) moved into every frame by
    the similarity transform (shift, uniform scale, rotation) fitted to the tracks visible in frame 0 and
    that frame; a frame with fewer than 2 such tracks gets ``frame`` unmoved. Uncovered borders repeat
    the edge pixels."""
    import cv2

    h, w = frame.shape[:2]
    out = [frame]
    for t in range(1, tracks.num_frames):
        both = tracks.visible[0] & tracks.visible[t]
        matrix = None
        if both.sum() >= 2:
            src = tracks.points[0][both].astype(np.float32)
            dst = tracks.points[t][both].astype(np.float32)
            matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
        if matrix is None:
            out.append(frame)
            continue
        out.append(cv2.warpAffine(frame, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    return np.stack(out)


GENERATED = ("all inputs", "track maps withheld", "sliding window")
"""The generations of :func:`generation_check` (then the model-free rows of :data:`YARDSTICKS`)."""
YARDSTICKS = ("copy frame 0 (no model)", "warp frame 0 along the tracks (no model)", "ground truth")


@torch.no_grad()
def generation_check(model, vae, o: ProbeOptions = ProbeOptions(), *, frames: int = 24, clip_length: int = 8,
                     sample_steps: int = 20) -> dict[str, Any]:
    """Generate ``o.clips`` test clips of ``frames`` frames (clips of ``clip_length``) and score them.

    Returns:
        ``{"rows": {name: {"psnr", "background_motion", "boundary_continuity"}}, "frames", "options"}``:
        means over the clips for each of :data:`GENERATED` (those the model can run) and :data:`YARDSTICKS`.
    """
    from .experiment import ReproOptions, generate_video, score_video, world_inputs

    if frames < clip_length + 1:
        raise ValueError(f"frames must be > clip_length ({clip_length}) to have a clip boundary, got {frames}")
    ro = ReproOptions(size=o.size, test_frames=frames, clip_length=clip_length, sample_steps=sample_steps,
                      num_tracks=o.num_tracks, seed=o.seed, overlap=2)
    names = [n for n in GENERATED if n != "track maps withheld" or model.config.use_bg] + list(YARDSTICKS)
    scores: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for k in range(o.clips):
        inp = world_inputs(TEST_SEED0 + k, frames, o.size, o.num_tracks, figure=not o.background_only)
        clip = inp["clip"]
        videos = {"all inputs": lambda: generate_video(model, vae, inp, ro),
                  "track maps withheld": lambda: generate_video(model, vae, inp, ro, use_tracks=False),
                  "sliding window": lambda: generate_video(model, vae, inp, ro, method="sliding_window"),
                  YARDSTICKS[0]: lambda: np.repeat(clip.frames[:1], frames, 0),
                  YARDSTICKS[1]: lambda: warp_along_tracks(clip.frames[0], inp["tracks"]),
                  YARDSTICKS[2]: lambda: clip.frames}
        for name in names:
            res = score_video(videos[name](), inp, clip_length, ("psnr", "background_motion", "boundary_continuity"))
            scores[name].append({m: float(r.value) for m, r in res.items()})
        logger.info("generation check: clip %d/%d done", k + 1, o.clips)
    rows = {n: {m: float(np.mean([s[m] for s in scores[n]])) for m in scores[n][0]} for n in names}
    return {"rows": rows, "frames": frames, "clip_length": clip_length, "options": o}


def format_generation(result: Mapping[str, Any]) -> str:
    """Markdown table of :func:`generation_check`'s result."""
    o: ProbeOptions = result["options"]
    lines = ["| generated video | PSNR dB | BG motion EPE px | seam ratio |", "|---|---|---|---|"]
    for name, r in result["rows"].items():
        label = f"*{name}*" if name in YARDSTICKS else f"model, {name}"
        psnr = "∞" if not np.isfinite(r["psnr"]) else f"{r['psnr']:.2f}"
        lines.append(f"| {label} | {psnr} | {r['background_motion']:.2f} | {r['boundary_continuity']:.2f} |")
    world = "background-only clips" if o.background_only else "clips"
    lines.append(f"\n{o.clips} synthetic test {world} x {result['frames']} frames, generated in clips of "
                 f"{result['clip_length']}; EPE = guidance tracks vs tracks re-extracted from the video, background "
                 f"only; seam ratio = frame change across clip boundaries / within clips (ground truth ~1).")
    return "\n".join(lines)


def format_probe(result: Mapping[str, Any]) -> str:
    """Markdown table of :func:`probe_inputs`' result: one row per variant, ``all / background`` per timestep."""
    o: ProbeOptions = result["options"]
    head = "| inputs | " + " | ".join(f"x0 error t={t} (all / bg)" for t in o.timesteps) + " |"
    lines = [head, "|" + "---|" * (len(o.timesteps) + 1)]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[t][0]:.4f} / {row[t][1]:.4f}" for t in o.timesteps) + " |")
    for label, (e_all, e_bg) in (("copy the condition frame", result["copy_condition"]),
                                 ("warp the condition frame along the tracks", result["warp_condition"])):
        cell = f"{e_all:.4f} / {e_bg:.4f}"
        lines.append(f"| *{label} (no model)* | " + " | ".join(cell for _ in o.timesteps) + " |")
    world = "background-only clips" if o.background_only else "clips"
    lines.append(f"\n{o.clips} synthetic test {world} x {o.frames} frames at {o.size} px; errors = mean squared "
                 f"error of the one-step x0 prediction in scaled-latent units, frames after the condition frame.")
    for name, (change, output) in result.get("encoder_response", {}).items():
        lines.append(f"{name} encoder: output rms {output:.4f}, of which depends on the maps {change:.4f} "
                     f"(rms change when they are zeroed; ~0 with a non-zero output = a dead encoder)")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m movingbg.repro.probe", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("model", help="MovingBG bundle (.safetensors)")
    ap.add_argument("--vae", required=True, help="the VAE the model was trained with (.safetensors)")
    ap.add_argument("--clips", type=int, default=ProbeOptions.clips, help="test clips (default 6)")
    ap.add_argument("--frames", type=int, default=ProbeOptions.frames, help="frames per clip (default 8)")
    ap.add_argument("--size", type=int, default=ProbeOptions.size,
                    help="frame size the model was trained at (default 64)")
    ap.add_argument("--timesteps", default="900,600,300", help="comma-separated noise levels (default 900,600,300)")
    ap.add_argument("--background-only", action="store_true", help="clips without the figure")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--generate", action="store_true",
                    help="also generate --gen-frames frames per clip and print PSNR / BG motion EPE / seam ratio "
                         "(minutes per clip on a CPU)")
    ap.add_argument("--gen-frames", type=int, default=24, help="frames per generated clip (default 24)")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps of --generate (default 20)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from ..models.bundle import load_bundle
    from ..train.encoders import load_vae

    try:
        timesteps = tuple(int(t) for t in args.timesteps.split(",") if t.strip())
        options = ProbeOptions(clips=args.clips, frames=args.frames, size=args.size, timesteps=timesteps,
                               background_only=args.background_only)
        if args.generate and not (args.gen_frames > options.frames and args.steps >= 1):
            raise ValueError(f"--gen-frames must exceed --frames ({options.frames}, the generation clip length) "
                             f"and --steps be >= 1, got --gen-frames {args.gen_frames} --steps {args.steps}")
        if args.threads:
            torch.set_num_threads(args.threads)
        model = load_bundle(args.model, dtype=torch.float32).eval()
        vae = load_vae(args.vae)
    except (ValueError, OSError) as exc:
        logger.error("error: %s", exc)
        return 2
    sys.stdout.write(format_probe(probe_inputs(model, vae, options)) + "\n")
    if args.generate:
        result = generation_check(model, vae, options, frames=args.gen_frames, clip_length=options.frames,
                                  sample_steps=args.steps)
        sys.stdout.write("\n" + format_generation(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
