"""Crash safety of `python -m smallgpt.train`: kill -9 at random moments and in the middle of
checkpoint writes, then `--resume auto` finishes the run exactly like an uninterrupted one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from smallgpt.checkpoint.store import CheckpointError, find_latest_checkpoint, verify_checkpoint
from smallgpt.config.loader import load_config
from smallgpt.train.logger import read_metrics
from smallgpt.train.trainer import Trainer

from tests.eval_helpers import one_torch_thread  # noqa: F401 (a fixture)
from tests.train_helpers import TINY, make_shards

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
MAX_STEPS = 30

# Runs the trainer with a pause after every file flush of a checkpoint write, so that a kill
# lands inside a write (the package has no such hook; this patches the child process only).
SLOW_WRITES = """
import sys, time
import smallgpt.checkpoint.store as ck
from smallgpt.train.cli import main
flush = ck._fsync_path
def slow_flush(path):
    flush(path)
    time.sleep(0.05)
ck._fsync_path = slow_flush
sys.exit(main(sys.argv[1:]))
"""


def overrides(shards: Path) -> list[str]:
    return [
        *TINY,
        f"data.shard_dir={shards}",
        f"train.max_steps={MAX_STEPS}",
        "train.eval_interval=10",
        "checkpoint.interval=1",
        "checkpoint.keep_last=2",
        "log.num_samples=0",
    ]


def trainer_command(shards: Path, run: Path, slow_writes: bool) -> list[str]:
    head = ["-c", SLOW_WRITES] if slow_writes else ["-m", "smallgpt.train"]
    args = ["demo-cpu", *overrides(shards), "--run-dir", str(run), "--resume", "auto"]
    return [sys.executable, *head, *args]


def newest_complete(run: Path) -> int:
    """Step of the newest checkpoint that verifies (0 when there is none)."""
    found = find_latest_checkpoint(run / "checkpoints")
    if found is None:
        return 0
    verify_checkpoint(found)
    return int(found.name.split("_")[1])


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Poll until `condition()` holds (True) or the process ends (False). The trainer deletes
    old checkpoints while we look, so a file vanishing under the check means "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if condition():
                return True
        except (OSError, CheckpointError):
            pass
        time.sleep(0.005)
    raise TimeoutError("the training process made no progress")


def torn_writes(run: Path) -> list[Path]:
    root = run / "checkpoints"
    return list(root.glob(".tmp-*")) if root.is_dir() else []


def kill_run(shards: Path, run: Path, *, slow_writes: bool, mid_write: bool, rng) -> bool:
    """Start a resumed run and kill -9 it after it wrote a checkpoint: at a random moment, or as
    soon as a checkpoint write is under way. Returns False when it finished before the kill."""
    before = newest_complete(run)
    proc = subprocess.Popen(
        trainer_command(shards, run, slow_writes),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not wait_for(lambda: newest_complete(run) > before, proc):
            return False
        if mid_write:
            if not wait_for(lambda: bool(torn_writes(run)), proc):
                return False
        else:
            time.sleep(rng.uniform(0.0, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    return proc.returncode == -signal.SIGKILL


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{MAX_STEPS:08d}" / "model.safetensors"))


def train_losses(run: Path) -> dict[int, float]:
    records = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    steps = [r["step"] for r in records]
    assert steps == list(range(1, MAX_STEPS + 1))  # each step logged once, in order
    return {r["step"]: r["loss"] for r in records}


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_kill_9_mid_run_and_mid_checkpoint_then_resume_auto_equals_an_uninterrupted_run(tmp_path):
    shards = make_shards(tmp_path)
    reference = tmp_path / "reference"
    with Trainer(load_config("demo-cpu", overrides(shards)), run_dir=reference) as trainer:
        trainer.fit()  # uninterrupted, in this process (on one thread, like the children)

    run, rng = tmp_path / "killed", random.Random(1234)
    rounds = [(False, False), (True, True), (True, True)]
    kills, torn = 0, 0
    for slow_writes, mid_write in rounds:
        progress = newest_complete(run)
        if not kill_run(shards, run, slow_writes=slow_writes, mid_write=mid_write, rng=rng):
            break
        kills += 1
        # Whatever the moment of the kill, the newest checkpoint that loads is complete and newer
        # than the one the round started from; a torn write stays hidden in its .tmp directory.
        assert newest_complete(run) > progress
        for partial in torn_writes(run):
            torn += 1
            target = run / "checkpoints" / partial.name.split("-")[1]
            assert not target.exists() or verify_checkpoint(target)
    assert kills == len(rounds) and torn >= 1

    finished = subprocess.run(
        trainer_command(shards, run, slow_writes=False),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    assert torn_writes(run) == []  # the resumed run removed the torn writes
    assert train_losses(run) == train_losses(reference)
    expected = final_weights(reference)
    resumed = final_weights(run)
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[name], expected[name]) for name in expected)
