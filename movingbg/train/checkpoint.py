"""Checkpoints: atomic, keep-last-N, exactly resumable; and the EMA of the trained weights.

A checkpoint is a folder ``OUTPUT_DIR/checkpoints/step-XXXXXXXX/`` holding

* accelerate's state (``accelerator.save_state``): ``model.safetensors`` (keys of the training
  wrapper: ``net.<MovingBGModel key>``, with ``module.`` in front under DDP), ``optimizer.bin``, the
  gradient scaler (fp16), and ``random_states_<rank>.pkl`` (python / numpy / torch / CUDA RNG of every
  process);
* ``ema.safetensors`` (MovingBGModel keys, when EMA is on);
* ``model_config.json`` (the MovingBGConfig), ``train_config.json``;
* ``trainer_state.json``: ``step`` (optimizer steps done; the data position follows from it, see
  :mod:`movingbg.train.data`), written last.

Every process writes into ``step-XXXXXXXX.tmp/``; the main process then flushes the files to disk and
renames the folder, so a checkpoint either exists completely or not at all (a run killed while saving
leaves a ``.tmp`` folder that the next run deletes). Only the newest ``keep_last`` are kept.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import torch

logger = logging.getLogger(__name__)

__all__ = ["EMA", "CHECKPOINT_DIR", "checkpoint_name", "list_checkpoints", "latest_checkpoint",
           "save_checkpoint", "read_trainer_state", "read_model_state", "strip_wrapper_prefix"]

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.safetensors"
_NAME = re.compile(r"^step-(\d{8})$")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "net.")


class EMA:
    """Exponential moving average of named parameters (fp32 shadow copies on their device).

    Decay at update ``n`` is ``min(decay, (1 + n) / (10 + n))`` (the usual warm-up).

    Args:
        params: ``{name: parameter}`` to average.
        decay: the target decay in (0, 1).
    """

    def __init__(self, params: Mapping[str, torch.Tensor], decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {n: p.detach().float().clone() for n, p in params.items()}

    @torch.no_grad()
    def update(self, params: Mapping[str, torch.Tensor]) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        names = list(self.shadow)
        torch._foreach_lerp_([self.shadow[n] for n in names], [params[n].detach().float() for n in names], 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = sorted(set(self.shadow) - set(state["shadow"]))
        if missing:
            raise ValueError(f"EMA state lacks {missing[:5]} ({len(missing)} tensors)")
        for name, value in state["shadow"].items():
            if name in self.shadow:
                self.shadow[name].copy_(value)
        self.updates = int(state["updates"])


def checkpoint_name(step: int) -> str:
    return f"step-{int(step):08d}"


def list_checkpoints(output_dir: os.PathLike | str) -> list[Path]:
    """Finished checkpoints (with ``trainer_state.json``), oldest first."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(output_dir: os.PathLike | str) -> Optional[Path]:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def read_trainer_state(checkpoint: os.PathLike | str) -> dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise ValueError(f"{checkpoint} is not a finished MovingBG checkpoint (no {STATE_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))


def strip_wrapper_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` / ``_orig_mod.`` / ``net.`` prefixes (DDP, torch.compile, training wrapper)."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def read_model_state(checkpoint: os.PathLike | str, ema: bool = True) -> dict[str, torch.Tensor]:
    """MovingBGModel state dict of a checkpoint (EMA weights replace trained ones when ``ema``).

    Raises:
        ValueError: no full model weights in the folder (e.g. FSDP-sharded: merge them with
            ``accelerate merge-weights`` first).
    """
    from safetensors.torch import load_file

    ckpt = Path(checkpoint)
    if (ckpt / "model.safetensors").is_file():
        state = load_file(str(ckpt / "model.safetensors"))
    elif (ckpt / "pytorch_model.bin").is_file():
        state = torch.load(str(ckpt / "pytorch_model.bin"), map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"{ckpt}: no model.safetensors / pytorch_model.bin (sharded FSDP/DeepSpeed checkpoints "
                         "must be merged first, e.g. with `accelerate merge-weights`)")
    state = strip_wrapper_prefix(state)
    if ema and (ckpt / EMA_FILE).is_file():
        shadow = load_file(str(ckpt / EMA_FILE))
        unknown = sorted(set(shadow) - set(state))
        if unknown:
            raise ValueError(f"{ckpt / EMA_FILE}: tensors {unknown[:5]} are not in the model")
        state.update({k: v.to(state[k].dtype) for k, v in shadow.items()})
    return state


def _fsync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` (and the folder entries) to disk."""
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    for d in [folder, *[p for p in folder.rglob("*") if p.is_dir()]]:
        _fsync_dir(d)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_checkpoint(accelerator, output_dir: os.PathLike | str, step: int, *, ema: Optional[EMA],
                    model_config_json: str, train_config: Mapping[str, Any], keep_last: int,
                    extra_state: Optional[Mapping[str, Any]] = None) -> Path:
    """Save a checkpoint atomically (all processes must call this).

    Returns:
        the finished checkpoint folder.
    """
    root = Path(output_dir) / CHECKPOINT_DIR
    final = root / checkpoint_name(step)
    tmp = root / (final.name + ".tmp")
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _finish(tmp, final, step, ema, model_config_json, train_config, extra_state)
        prune_checkpoints(output_dir, keep_last)
    accelerator.wait_for_everyone()
    return final


def _finish(tmp: Path, final: Path, step: int, ema: Optional[EMA], model_config_json: str,
            train_config: Mapping[str, Any], extra_state: Optional[Mapping[str, Any]]) -> None:
    from safetensors.torch import save_file

    if ema is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in ema.shadow.items()}, str(tmp / EMA_FILE),
                  metadata={"updates": str(ema.updates), "decay": str(ema.decay)})
    (tmp / "model_config.json").write_text(model_config_json, encoding="utf-8")
    (tmp / "train_config.json").write_text(json.dumps(dict(train_config), indent=1), encoding="utf-8")
    state = {"format": "movingbg.checkpoint/1", "step": int(step), **dict(extra_state or {})}
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
    _fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    logger.info("saved checkpoint %s", final)


def prune_checkpoints(output_dir: os.PathLike | str, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints; returns the deleted folders."""
    found = list_checkpoints(output_dir)
    doomed = found[:-keep_last] if keep_last > 0 else []
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
        logger.debug("deleted old checkpoint %s", p.name)
    return doomed


def clean_partial(output_dir: os.PathLike | str) -> list[Path]:
    """Delete ``*.tmp`` checkpoint folders left by a run killed while saving."""
    root = Path(output_dir) / CHECKPOINT_DIR
    gone = [p for p in root.glob("step-*.tmp") if p.is_dir()] if root.is_dir() else []
    for p in gone:
        logger.info("removing unfinished checkpoint %s", p.name)
        shutil.rmtree(p, ignore_errors=True)
    return gone


def load_ema(checkpoint: os.PathLike | str, ema: EMA, device: Any = None) -> None:
    """Restore an :class:`EMA` from a checkpoint's ``ema.safetensors``."""
    from safetensors import safe_open

    path = Path(checkpoint) / EMA_FILE
    if not path.is_file():
        raise ValueError(f"{checkpoint}: EMA is on but the checkpoint has no {EMA_FILE} (it was saved without EMA)")
    with safe_open(str(path), framework="pt", device=str(device or "cpu")) as f:
        meta = f.metadata() or {}
        shadow = {k: f.get_tensor(k) for k in f.keys()}
    ema.load_state_dict({"shadow": shadow, "updates": int(meta.get("updates", 0))})
