"""``python -m movingbg.train`` as real processes: SIGKILL + resume gives the uninterrupted result bit for
bit, and two CPU processes (torchrun, gloo DDP) train like one process with the batch of both."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.core.test_train import config_dict, make_workspace

pytest.importorskip("accelerate")

ROOT = Path(__file__).resolve().parents[2]
LOSS_LINE = re.compile(r"step (\d+)/\d+ loss ([0-9.eE+-]+)")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("resume"))


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("WORLD_SIZE", None)
    return env


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg))
    return path


def _train(config: Path, log: Path, *launcher: str) -> subprocess.Popen:
    cmd = [*launcher] if launcher else [sys.executable]
    cmd += ["-m", "movingbg.train", "--config", str(config)]
    return subprocess.Popen(cmd, cwd=str(ROOT), env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)


def _wait(proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert rc == 0, log.read_text()[-4000:]


def _state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _losses(log: Path) -> dict[int, float]:
    return {int(m.group(1)): float(m.group(2)) for m in LOSS_LINE.finditer(log.read_text())}


def test_sigkill_then_resume_reaches_the_uninterrupted_weights(ws, tmp_path):
    common = dict(max_steps=10, checkpoint_every=2, keep_last=2, num_workers=1, ema_decay=0.9,
                  blank_condition_prob=0.3, drop_joint_prob=0.2, drop_reference_prob=0.2)
    straight = _write(tmp_path / "a.json", config_dict(ws, tmp_path / "a", **common))
    killed = _write(tmp_path / "b.json", config_dict(ws, tmp_path / "b", **common))
    a = _train(straight, tmp_path / "a.log")
    b = _train(killed, tmp_path / "b1.log")
    target = tmp_path / "b" / "checkpoints" / "step-00000004"
    deadline = time.monotonic() + 240
    while not target.is_dir() and b.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert target.is_dir(), (tmp_path / "b1.log").read_text()[-3000:]
    os.kill(b.pid, signal.SIGKILL)
    assert b.wait(30) == -signal.SIGKILL
    assert not (tmp_path / "b" / "movingbg_trained.safetensors").exists(), "killed before the end"
    (tmp_path / "b" / "checkpoints" / "step-00000099.tmp").mkdir()  # as if killed while saving

    resumed = _train(killed, tmp_path / "b2.log")
    _wait(resumed, tmp_path / "b2.log")
    _wait(a, tmp_path / "a.log")
    text = (tmp_path / "b2.log").read_text()
    assert re.search(r"resumed from .*step-0000000[4-9] \(step [4-9]\)", text), text[-3000:]
    assert not (tmp_path / "b" / "checkpoints" / "step-00000099.tmp").exists()
    first, second = _losses(tmp_path / "a.log"), {**_losses(tmp_path / "b1.log"), **_losses(tmp_path / "b2.log")}
    assert sorted(first) == list(range(1, 11)) and all(second[k] == first[k] for k in first)
    want = _state(tmp_path / "a" / "movingbg_trained.safetensors")
    got = _state(tmp_path / "b" / "movingbg_trained.safetensors")
    assert got.keys() == want.keys()
    worst = max((got[k] - want[k]).abs().max().item() for k in want)
    assert worst == 0.0, f"resumed run differs from the uninterrupted one by {worst}"


def test_two_cpu_processes_train_like_one_process_with_both_batches(ws, tmp_path):
    from movingbg.train import Trainer
    from movingbg.train.config import TrainConfig

    # adam_epsilon = 1: updates are ~linear in the gradient, so float-order noise is not magnified
    common = dict(max_steps=3, checkpoint_every=3, drop_joint_prob=0.0, blank_condition_prob=0.5,
                  learning_rate=0.1, adam_epsilon=1.0, weight_decay=0.0, num_workers=1, cache_latents=True)
    # the processes split the first encoding of the on-disk latent cache, then read every video from it
    cfg = _write(tmp_path / "ddp.json", config_dict(ws, tmp_path / "ddp", gradient_checkpointing=True,
                                                    latent_cache_dir=str(tmp_path / "latents"), **common))
    proc = _train(cfg, tmp_path / "ddp.log", sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node", "2")
    single = config_dict(ws, tmp_path / "one", batch_size=2, **{**common, "num_workers": 0})
    one = Trainer(TrainConfig.from_dict(single))
    start = {k: v.detach().clone() for k, v in one.net.state_dict().items()}
    result = one.run()
    _wait(proc, tmp_path / "ddp.log")
    text = (tmp_path / "ddp.log").read_text()
    assert "2 process(es) (MULTI_CPU)" in text, text[-3000:]
    assert "2/2 videos of process 0 ready (2 encoded" in text and "1/1 videos of process 1 ready (1 encoded" in text
    assert len(list((tmp_path / "latents").glob("*/*.safetensors"))) == 3
    ddp_losses = _losses(tmp_path / "ddp.log")
    assert sorted(ddp_losses) == [1, 2, 3]
    for step, loss in ddp_losses.items():
        assert loss == pytest.approx(result.losses[step - 1], rel=1e-4, abs=1e-6)
    ddp = _state(tmp_path / "ddp" / "movingbg_trained.safetensors")
    single = _state(result.export_path)
    moved = max((single[k] - start[k]).abs().max().item() for k in single)
    differ = max((ddp[k] - single[k]).abs().max().item() for k in single)
    assert moved > 1e-5 and differ < 1e-3 * moved, (moved, differ)  # float summation order differs only
