"""Resuming a run: which checkpoint it continues from, and loading that back with its checks."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from smallgpt.checkpoint.rng import restore_rng_state
from smallgpt.checkpoint.store import (
    checkpoint_step,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    verify_checkpoint,
)
from smallgpt.data.datasets import RandomWindowBatches
from smallgpt.train.build import CHECKPOINT_DIR
from smallgpt.train.distributed import DistInfo, gather_to_all


def resolve_resume(resume: str | Path | None, run_dir: Path, dist: DistInfo) -> Path | None:
    """The checkpoint to resume from: None (fresh run; refuses a run directory that already holds
    checkpoints), "auto" (the newest valid one, or None) or a checkpoint directory (verified).
    Rank 0 picks (warning about corrupt ones); every rank gets its path (collective)."""
    root = run_dir / CHECKPOINT_DIR
    choice: str | None = None
    if dist.is_main:
        if resume is None:
            if find_latest_checkpoint(root) is not None:
                raise FileExistsError(
                    f"run directory {run_dir} already holds checkpoints; continue it with "
                    "--resume auto, or choose another --run-dir"
                )
        elif str(resume) == "auto":
            found = find_latest_checkpoint(root)
            if found is None:
                print(f"no checkpoint under {root}; starting from scratch", file=sys.stderr)
            choice = None if found is None else str(found)
        else:
            verify_checkpoint(resume)
            choice = str(resume)
    choice = gather_to_all(choice, dist)[0]
    return None if choice is None else Path(choice)


def load_for_resume(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: Any | None,
    *,
    batches: RandomWindowBatches,
    dist: DistInfo,
    lr: float,
) -> dict[str, Any]:
    """Load checkpoint `path` into these objects, `batches`' position and this rank's RNG
    state; return the trainer state it stores (step, tokens_seen, ...).

    Raises ValueError for a checkpoint written by another number of processes; warns when the
    config's learning rate `lr` is not the checkpoint's (which is kept).
    """
    state = load_checkpoint(path, model, optimizer, scheduler, scaler)
    if state.get("world_size") != dist.world_size:
        raise ValueError(
            f"checkpoint {path} was written by {state.get('world_size')} processes, this run "
            f"has {dist.world_size}; resume with the same number of processes"
        )
    batches.load_state_dict(state["data"])
    restore_rng_state(state["rng"][dist.rank])
    # The schedule's base learning rate comes back with the checkpoint (exact resume), so a
    # changed optim.lr would otherwise be ignored without a word.
    resumed_lr = max(scheduler.base_lrs)
    if not math.isclose(resumed_lr, lr, rel_tol=1e-6):
        warnings.warn(
            f"resuming from {path}: the checkpoint's schedule uses optim.lr={resumed_lr:g}, "
            f"the config says optim.lr={lr:g}; the checkpoint's value is kept "
            "(start a new run to train with another learning rate)",
            stacklevel=5,  # the Trainer(...) call, through _restore, _setup and __init__
        )
    return state


def checkpoint_at_or_before(run_dir: Path, step: int) -> Path | None:
    """The newest step checkpoint of the run at or before `step` (None if there is none): what
    a diverged run reports as its last good one."""
    for path in list_checkpoints(run_dir / CHECKPOINT_DIR):
        found = checkpoint_step(path)
        if found is not None and found <= step:
            return path
    return None
