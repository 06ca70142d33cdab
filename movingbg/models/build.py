"""Build a MovingBG bundle from public weights.

    python -m movingbg.models.build --moore DIR --out movingbg.safetensors
        DIR holds Moore-AnimateAnyone's denoising_unet.pth, reference_unet.pth, pose_guider.pth,
        motion_module.pth (a public human-animation model to start from).
    python -m movingbg.models.build --ldm v1-5-pruned-emaonly.safetensors --motion mm_sd_v15_v2.ckpt \
        --out movingbg.safetensors [--pose-guider pose_guider.pth]
        An SD1.5 checkpoint (original LDM layout) for both U-Nets + an AnimateDiff motion module
        (v2 with mid block, or v3 without); encoders and concat channels start at zero.

Every load is strict: missing, unexpected or mis-shaped keys stop the build with their names.
The bundle is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

import torch

from .bundle import save_bundle
from .config import MotionModuleConfig, MovingBGConfig
from .convert import build_bundle_from_ldm, build_bundle_from_moore, load_state_dict_file
from .generator import MovingBGModel

logger = logging.getLogger(__name__)

MOORE_FILES = ("denoising_unet.pth", "reference_unet.pth", "pose_guider.pth", "motion_module.pth")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _motion_config(motion_sd) -> MotionModuleConfig:
    """v2 (mid-block module) or v3 (none), read off the keys."""
    return MotionModuleConfig(use_mid_block=any(k.startswith("mid_block.motion_modules") for k in motion_sd))


def build_from_moore(folder: Path, dtype: Optional[torch.dtype] = None,
                     base: Optional[MovingBGConfig] = None) -> MovingBGModel:
    folder = Path(folder)
    missing = [f for f in MOORE_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)} (Moore-AnimateAnyone's pretrained_weights)")
    sds = {f: load_state_dict_file(folder / f) for f in MOORE_FILES}
    config = (base or MovingBGConfig.sd15()).replace(motion=_motion_config(sds["motion_module.pth"]))
    return build_bundle_from_moore(sds["denoising_unet.pth"], sds["reference_unet.pth"], sds["pose_guider.pth"],
                                   sds["motion_module.pth"], config, dtype=dtype)


def build_from_ldm(ckpt: Path, motion: Path, pose_guider: Optional[Path] = None,
                   dtype: Optional[torch.dtype] = None, base: Optional[MovingBGConfig] = None) -> MovingBGModel:
    motion_sd = load_state_dict_file(motion)
    config = (base or MovingBGConfig.sd15()).replace(motion=_motion_config(motion_sd))
    guider = load_state_dict_file(pose_guider) if pose_guider else None
    return build_bundle_from_ldm(load_state_dict_file(ckpt), motion_sd, config, pose_guider_sd=guider, dtype=dtype)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m movingbg.models.build", description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--moore", type=Path, help="folder with Moore-AnimateAnyone's four .pth files")
    src.add_argument("--ldm", type=Path, help="SD1.5 checkpoint in LDM layout (.safetensors/.ckpt)")
    ap.add_argument("--motion", type=Path, help="AnimateDiff motion module (with --ldm)")
    ap.add_argument("--pose-guider", type=Path, help="optional pose guider for the foreground encoder (with --ldm)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="stored precision (default fp16)")
    ap.add_argument("--config", type=Path, help="architecture JSON (MovingBGConfig); default: SD1.5 size")
    ap.add_argument("--out", type=Path, required=True, help="bundle file (.safetensors), e.g. ComfyUI/models/movingbg/")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.ldm and not args.motion:
        ap.error("--ldm needs --motion (an AnimateDiff motion module)")
    try:
        base = MovingBGConfig.from_json(args.config.read_text()) if args.config else None
        if args.moore:
            model = build_from_moore(args.moore, DTYPES[args.dtype], base)
        else:
            model = build_from_ldm(args.ldm, args.motion, args.pose_guider, DTYPES[args.dtype], base)
        out = save_bundle(model, args.out)
    except (OSError, ValueError) as exc:
        logger.error("error: %s", exc)
        return 1
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
