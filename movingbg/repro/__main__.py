"""``python -m movingbg.repro [WORKDIR]``: run (or resume) the miniature reproduction and print its table.

Examples::

    python -m movingbg.repro runs/repro                      # the README's table (~1 h on 2 CPU cores)
    python -m movingbg.repro /tmp/quick --quick              # a few steps of everything (minutes)
    python -m movingbg.repro runs/repro --ship ComfyUI/models # also install the full model + VAE there

Each stage's output is kept in WORKDIR; a rerun skips what is done (delete a folder to redo it).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
from pathlib import Path
from typing import Optional

from .experiment import VARIANTS, ReproOptions, bundle_path, format_results, run

logger = logging.getLogger("movingbg.repro")

QUICK = dict(train_videos=4, train_frames=12, test_videos=1, test_frames=12, clip_length=4, vae_steps=4,
             vae_batch=2, train_steps=3, batch_size=1, sample_steps=2, num_tracks=8)
"""A smoke-test size: every stage runs, nothing is learnt."""


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m movingbg.repro", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("workdir", nargs="?", default="runs/repro", help="where every stage writes (default runs/repro)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke-test sizes (every stage, minutes)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a ReproOptions field, e.g. --set train_steps=1200")
    ap.add_argument("--ship", metavar="MODELS_DIR",
                    help="copy the full model's bundle into MODELS_DIR/movingbg/ and its VAE into MODELS_DIR/vae/ "
                         "(a ComfyUI models folder, or movingbg/assets/models to replace the shipped model)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    try:
        fields = {f.name: f for f in dataclasses.fields(ReproOptions)}
        values = dict(QUICK) if args.quick else {}
        for pair in args.set:
            name, _, text = pair.partition("=")
            if name not in fields or not text:
                raise ValueError(f"--set {pair!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}")
            default = getattr(ReproOptions(), name)
            if isinstance(default, tuple):  # e.g. --set encoder_channels=8,16,32,64
                values[name] = tuple(type(default[0])(v) for v in text.split(",") if v)
            elif isinstance(default, bool):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(f"--set {pair!r}: {name} is true or false")
                values[name] = text.lower() in ("true", "1")
            else:
                values[name] = type(default)(text)
        values["variants"] = tuple(v for v in args.variants.split(",") if v)
        options = ReproOptions(**values)
    except ValueError as exc:
        logger.error("error: %s", exc)
        return 2
    results = run(args.workdir, options)
    sys.stdout.write(format_results(results) + "\n")
    sys.stdout.write(f"\nVAE: {results['vae']['psnr_test_db']:.2f} dB reconstruction PSNR on test frames; "
                     f"total {results['seconds'] / 60:.1f} min; details in {Path(args.workdir) / 'results.json'}\n")
    if args.ship:
        if "full" not in options.variants:
            logger.error("error: --ship needs the 'full' variant")
            return 2
        dest = Path(args.ship)
        dest.mkdir(parents=True, exist_ok=True)
        wd = Path(args.workdir)
        bundle = bundle_path(wd, "full")
        vae = Path(options.vae) if options.vae else wd / "vae.safetensors"
        for src, target in ((bundle, dest / "movingbg" / bundle.name),
                            (bundle.with_suffix(".json"), dest / "movingbg" / bundle.with_suffix(".json").name),
                            (vae, dest / "vae" / "movingbg_mini_vae.safetensors")):
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_file() and target.samefile(src):
                continue  # --set vae=<the shipped VAE> --ship movingbg/assets/models
            tmp = target.with_name(target.name + ".tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(target)
            sys.stdout.write(f"shipped {target}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
