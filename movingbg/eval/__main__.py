"""Evaluate a generated video: ``python -m movingbg.eval --generated VIDEO [...]``.

Prints a table (or JSON with ``--json -``) of every metric the inputs allow; the others are listed
as skipped with the reason. Examples::

    python -m movingbg.eval --generated out.mp4 --reference ref.png
    python -m movingbg.eval --generated out.mp4 --reference ref.png --driving drive.mp4 \\
        --tracks tracks.npz --clip-length 16 --gt drive.mp4 --json report.json

Inputs are resized to the generated video's size when they differ and trimmed to the shortest
length (both noted in the report). In the self-reconstruction setting of the paper's Table 1 the
driving video is the ground truth: pass it as ``--gt`` too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

logger = logging.getLogger(__name__)


def _resize_video(frames: np.ndarray, width: int, height: int, interp: int = cv2.INTER_AREA) -> np.ndarray:
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m movingbg.eval",
        description="MovingBG evaluation: PSNR/SSIM/LPIPS/FVD against ground truth, background-motion fidelity, "
                    "clip-boundary continuity and long-video drift.")
    p.add_argument("--generated", required=True, help="generated video (mp4/webm/gif... or a folder of images)")
    p.add_argument("--reference", help="reference image the video was generated from (drift)")
    p.add_argument("--driving", help="driving video; guidance tracks are re-extracted from it with KLT "
                                     "when --tracks is not given")
    p.add_argument("--tracks", help="guidance tracks .npz (points (T,N,2), visible (T,N), width, height)")
    p.add_argument("--clip-length", type=int, help="progressive clip length L used for generation (continuity)")
    p.add_argument("--gt", help="ground-truth video (PSNR, SSIM, LPIPS, FVD)")
    p.add_argument("--alpha", help="person matte video of the generated video (white = person); restricts the "
                                   "motion and drift metrics to the background")
    p.add_argument("--metrics", default=",".join(_metric_names()),
                   help="comma-separated subset of: " + ", ".join(_metric_names()))
    p.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex")
    p.add_argument("--weights-dir", action="append", default=None,
                   help="folder to look for LPIPS/I3D weights in (repeatable); downloads go to the first")
    p.add_argument("--offline", action="store_true", help="never download weights (same as MOVINGBG_OFFLINE=1)")
    p.add_argument("--max-frames", type=int, default=0, help="evaluate at most this many frames (0 = all)")
    p.add_argument("--device", help="torch device for LPIPS/FVD (default: cuda when available)")
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON to PATH ('-' = stdout, no table)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _metric_names() -> tuple[str, ...]:
    from .report import METRICS

    return METRICS


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from ..io.video import VideoReadError, read_video
    from ..preprocess.tracks import track_klt
    from .report import evaluate, format_table, to_jsonable
    from .tracks_io import load_tracks

    notes: list[str] = []
    try:
        gen = read_video(args.generated, max_frames=max(args.max_frames, 0)).frames
    except VideoReadError as exc:
        logger.error(f"error: --generated: {exc}")
        return 2
    T, H, W = gen.shape[:3]

    def side_video(path: str, flag: str) -> Optional[np.ndarray]:
        nonlocal gen, T
        try:
            v = read_video(path, max_frames=max(args.max_frames, 0)).frames
        except VideoReadError as exc:
            raise SystemExit(f"error: {flag}: {exc}")
        if v.shape[1:3] != (H, W):
            notes.append(f"{flag} resized from {v.shape[2]}x{v.shape[1]} to {W}x{H}")
            v = _resize_video(v, W, H)
        if v.shape[0] != T:
            n = min(v.shape[0], T)
            notes.append(f"{flag} has {v.shape[0]} frames, generated {T}: both trimmed to {n}")
            gen, T, v = gen[:n], n, v[:n]
        return v

    try:
        gt = side_video(args.gt, "--gt") if args.gt else None
        driving = side_video(args.driving, "--driving") if args.driving else None
        alpha = None
        if args.alpha:
            av = side_video(args.alpha, "--alpha")
            alpha = av.astype(np.float32).mean(axis=-1) / 255.0
    except SystemExit as exc:
        logger.error(str(exc))
        return 2
    # a later trim may have shortened the generated video: trim everything to T
    gt = None if gt is None else gt[:T]
    driving = None if driving is None else driving[:T]
    alpha = None if alpha is None else alpha[:T]

    reference = None
    if args.reference:
        img = cv2.imread(str(args.reference), cv2.IMREAD_COLOR)
        if img is None:
            logger.error(f"error: --reference: cannot read image '{args.reference}'")
            return 2
        reference = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if reference.shape[:2] != (H, W):
            notes.append(f"--reference resized from {reference.shape[1]}x{reference.shape[0]} to {W}x{H}")
            reference = cv2.resize(reference, (W, H), interpolation=cv2.INTER_AREA)

    guidance = None
    if args.tracks:
        try:
            guidance = load_tracks(args.tracks, width=W, height=H)
        except ValueError as exc:
            logger.error(f"error: --tracks: {exc}")
            return 2
        if guidance.num_frames != T:
            n = min(guidance.num_frames, T)
            notes.append(f"--tracks has {guidance.num_frames} frames, generated {T}: compared on the first {n}")
            from ..types import Tracks

            guidance = Tracks(guidance.points[:n], guidance.visible[:n], guidance.width, guidance.height)
            gen, T = gen[:n], n
            gt = None if gt is None else gt[:n]
            alpha = None if alpha is None else alpha[:n]
    elif driving is not None:
        guidance = track_klt(driving)
        notes.append("guidance tracks re-extracted from --driving with KLT (no person matte: points on the driving "
                     "person are included; pass --tracks for the exact guidance)")

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    try:
        results = evaluate(
            gen, reference=reference, gt=gt, guidance=guidance, alpha=alpha, clip_length=args.clip_length,
            metrics=metrics, lpips_net=args.lpips_net, weight_dirs=args.weights_dir,
            download_dir=args.weights_dir[0] if args.weights_dir else None,
            allow_download=False if args.offline else None, device=args.device)
    except ValueError as exc:
        logger.error(f"error: {exc}")
        return 2

    report = {
        "inputs": {"generated": str(Path(args.generated)), "frames": int(T), "width": int(W), "height": int(H),
                   "reference": args.reference, "gt": args.gt, "driving": args.driving, "tracks": args.tracks,
                   "alpha": args.alpha, "clip_length": args.clip_length, "notes": notes},
        "metrics": {name: r.to_dict() for name, r in results.items()},
    }
    if args.json and args.json != "-":
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(to_jsonable(report), indent=2))
    if args.json == "-":
        sys.stdout.write(json.dumps(to_jsonable(report), indent=2) + "\n")
    else:
        sys.stdout.write(f"{args.generated}: {T} frames, {W}x{H}\n")
        for n in notes:
            sys.stdout.write(f"note: {n}\n")
        sys.stdout.write(format_table(results) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
