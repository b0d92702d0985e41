"""Building a run from its `Config`: the data, the optimizer and its schedule, the wrapped
model, the logger, and the names of what a run directory holds."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR

from smallgpt.config.loader import config_to_dict
from smallgpt.config.schema import Config
from smallgpt.data.datasets import RandomWindowBatches, TokenShardDataset
from smallgpt.data.prepare import prepare_data
from smallgpt.model.gpt import SmallGPT
from smallgpt.optim.schedule import cosine_with_warmup_factor
from smallgpt.tokenizer.bpe import Tokenizer
from smallgpt.train.budget import RunLength
from smallgpt.train.distributed import DistInfo, barrier
from smallgpt.train.logger import RunLogger
from smallgpt.train.runtime import Runtime

# What a run directory holds.
CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "loss.png"


@dataclass(frozen=True)
class RunData:
    """The tokenizer, the shards and the two splits a run reads."""

    tokenizer: Tokenizer
    shard_dir: Path
    batches: RandomWindowBatches  # this rank's training batches
    val_data: TokenShardDataset  # every validation window


def load_run_data(config: Config, run_dir: Path, dist: DistInfo, show_progress: bool) -> RunData:
    """Prepare the tokenizer and shards on rank 0 (training/encoding them if needed), then open
    them on every rank (collective)."""
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        prepared = prepare_data(config.data, run_dir, show_progress=show_progress)
    barrier(dist)
    if not dist.is_main:
        prepared = prepare_data(config.data, run_dir, show_progress=False)
    seq_len, train = config.seq_len, config.train
    batches = RandomWindowBatches(
        prepared.shard_dir,
        "train",
        seq_len=seq_len,
        batch_size=train.batch_size,
        seed=train.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    val_data = TokenShardDataset(prepared.shard_dir, "val", seq_len)
    return RunData(prepared.tokenizer, prepared.shard_dir, batches, val_data)


def build_optimizer(
    config: Config, model: SmallGPT, device_type: str, length: RunLength, announce: bool
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The `optim` section's optimizer over `model` and its warm-up + cosine schedule over
    `length.steps` (read at every step: a planned length moves the decay with it); `announce`
    prints the note when the warm-up is shortened."""
    o = config.optim
    optimizer = model.configure_optimizers(
        weight_decay=o.weight_decay,
        lr=o.lr,
        betas=o.betas,
        device_type=device_type,
        optimizer=o.name,
        eps=o.eps,
    )
    warmup = warmup_steps(config, announce)

    def factor(step: int) -> float:
        return cosine_with_warmup_factor(step, warmup, length.steps, o.min_lr_ratio)

    return optimizer, LambdaLR(optimizer, factor)


def run_length(config: Config) -> RunLength:
    """train.max_steps, or with train.fit_steps_to_budget a length planned from the run's timings
    (max_steps the limit)."""
    t = config.train
    planned = t.fit_steps_to_budget and t.max_time_minutes is not None
    budget_s = t.max_time_minutes * 60 if planned else None
    return RunLength(
        t.max_steps,
        budget_s=budget_s,
        eval_interval=t.eval_interval,
        checkpoint_interval=config.checkpoint.interval,
        eval_batches=t.eval_batches or 0,
    )


def warmup_steps(config: Config, announce: bool) -> int:
    """optim.warmup_steps, shortened to train.max_steps for a run shorter than its warm-up.

    A short run of a preset (a smoke test, a profile) then warms up over all its steps and
    reaches optim.lr at the last one, with no cosine decay; `announce` says so.
    """
    warmup, steps = config.optim.warmup_steps, config.train.max_steps
    if warmup <= steps:
        return warmup
    if announce:
        print(
            f"note: optim.warmup_steps ({warmup}) exceeds train.max_steps ({steps}): the "
            f"warm-up is shortened to the run's {steps} steps (the learning rate reaches "
            "optim.lr at the last step, with no cosine decay)",
            file=sys.stderr,
        )
    return steps


def wrap_model(
    model: torch.nn.Module, config: Config, runtime: Runtime, dist: DistInfo
) -> torch.nn.Module:
    """The module the training step calls: `model` compiled (train.compile) and wrapped in
    DistributedDataParallel when the run has several processes."""
    if config.train.compile:
        model = torch.compile(model)
    if dist.enabled:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids)
    return model


def open_run_logger(config: Config, run_dir: Path, resume_step: int | None) -> RunLogger:
    """The run's metrics log (metrics.jsonl, and TensorBoard or W&B as the `log` section asks);
    when resuming, `resume_step` drops the records an interrupted run wrote after it (None
    starts a new file)."""
    lg = config.log
    return RunLogger(
        run_dir,
        tensorboard=lg.tensorboard,
        wandb=lg.wandb,
        wandb_project=lg.wandb_project,
        wandb_run_name=lg.wandb_run_name,
        config=config_to_dict(config),
        resume_step=resume_step,
    )
