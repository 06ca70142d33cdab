"""Export a training checkpoint as a MovingBG bundle (what ComfyUI's MovingBG Load Model lists from
``models/movingbg/``).

    python -m movingbg.train.export CHECKPOINT OUT.safetensors [--dtype fp16|bf16|fp32] [--no-ema]

``CHECKPOINT`` is a ``checkpoints/step-XXXXXXXX`` folder, or a training ``output_dir`` (its newest
checkpoint is used). EMA weights are exported when the checkpoint has them (``--no-ema``: the raw
trained weights). The bundle is written with :func:`movingbg.models.bundle.save_bundle` (atomic, with a
``.json`` config sidecar) and loads strictly with ``load_bundle``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import torch

from ..models.bundle import model_from_state_dict, save_bundle
from ..models.config import MovingBGConfig
from .checkpoint import latest_checkpoint, read_model_state, read_trainer_state

logger = logging.getLogger(__name__)

__all__ = ["export_checkpoint", "resolve_checkpoint", "main"]

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_checkpoint(path: os.PathLike | str) -> Path:
    """A checkpoint folder itself, or the newest checkpoint of a training output folder.

    Raises:
        ValueError: neither.
    """
    p = Path(path)
    if (p / "trainer_state.json").is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        raise ValueError(f"{p} is neither a checkpoint folder nor a training output folder with checkpoints")
    return latest


def export_checkpoint(checkpoint: os.PathLike | str, out: os.PathLike | str, *, dtype: str = "fp16",
                      ema: bool = True) -> Path:
    """Write ``out`` (a ``.safetensors`` bundle) from a training checkpoint.

    Args:
        checkpoint: checkpoint folder or training output folder (newest checkpoint).
        out: bundle path.
        dtype: ``"fp16"``, ``"bf16"`` or ``"fp32"``.
        ema: use the EMA weights when the checkpoint has them.

    Returns:
        the bundle path.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    ckpt = resolve_checkpoint(checkpoint)
    step = read_trainer_state(ckpt).get("step")
    config = MovingBGConfig.from_json((ckpt / "model_config.json").read_text(encoding="utf-8"))
    state = read_model_state(ckpt, ema=ema)
    model = model_from_state_dict(config, state, dtype=DTYPES[dtype], what=f"checkpoint {ckpt.name}")
    path = save_bundle(model, out)
    logger.info("exported %s (step %s) to %s", ckpt, step, path)
    return path


def main(argv: Optional[list[str]] = None) -> int:
    description = __doc__.split("\n\n")[0].replace("\n", " ")
    ap = argparse.ArgumentParser(prog="python -m movingbg.train.export", description=description)
    ap.add_argument("checkpoint", type=Path, help="checkpoints/step-XXXXXXXX folder or a training output_dir")
    ap.add_argument("out", type=Path, help="bundle to write (.safetensors), e.g. ComfyUI/models/movingbg/x.safetensors")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="stored precision (default fp16)")
    ap.add_argument("--no-ema", action="store_true", help="export the trained weights, not their EMA")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.out.suffix != ".safetensors":
        logger.error("error: OUT must end in .safetensors, got %s", args.out)
        return 2
    try:
        export_checkpoint(args.checkpoint, args.out, dtype=args.dtype, ema=not args.no_ema)
    except (OSError, ValueError) as exc:
        logger.error("error: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
