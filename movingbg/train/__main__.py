r"""``python -m movingbg.train --config CONFIG.json|yaml [--set field=value ...] [--check]``.

One process:      python -m movingbg.train --config run.yaml
GPUs / nodes:     accelerate launch [--multi_gpu --num_processes 8 | --config_file fsdp.yaml] \
                      -m movingbg.train --config run.yaml
CPU, 2 processes: torchrun --standalone --nproc_per_node 2 -m movingbg.train --config run.yaml   (gloo)

A bad config (unknown or missing fields, missing paths, learning_rate <= 0, clip_length > 32, no prepared
videos) stops before anything is loaded, with a message naming the field (exit code 2). A run resumes
from the newest checkpoint in ``output_dir`` (``resume: auto``) and exports the bundle at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

from .config import load_config

logger = logging.getLogger("movingbg.train")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects field=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = _parse_value(value)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m movingbg.train",
                                 description="Train MovingBG on a prepared cache (python -m movingbg.prepare).",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--config", type=Path, required=True, help="training config (.json, .yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a config field (value parsed as JSON when possible)")
    ap.add_argument("--check", action="store_true", help="only validate the config and the data, then exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    try:
        config = load_config(args.config, _overrides(args.set))
        if args.check:
            config.check_start()
            logger.info("config OK")
            return 0
        from .trainer import Trainer

        trainer = Trainer(config)
    except ValueError as exc:
        logger.error("error: %s", exc)
        return 2
    result = trainer.run()
    if trainer.accelerator.is_main_process:
        logger.info("done: %d steps, final loss %.5f, bundle %s", result.steps, result.final_loss, result.export_path)
    trainer.accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
