"""Tiny training runs shared by the trainer tests: a few CPU steps of a 2-layer, 32-wide model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from smallgpt.config.loader import PACKAGE_DIR, load_config
from smallgpt.train.callbacks import StepResult, TrainerCallback
from smallgpt.train.trainer import Trainer

SHAKESPEARE = PACKAGE_DIR / "assets" / "tinyshakespeare.txt"

TINY = [
    "model.embed_dim=32",
    "model.num_heads=2",
    "model.num_layers=2",
    "model.max_seq_len=32",
    "data.seq_len=32",
    "model.dropout=0.0",
    "train.device=cpu",
    "train.precision=fp32",  # exact comparisons; the demo preset itself trains in bf16
    "train.batch_size=4",
    "train.max_steps=8",
    "train.eval_interval=4",
    "train.eval_batches=2",
    "optim.warmup_steps=2",
    "optim.lr=3e-3",
    "log.interval=1",
    "log.progress_bar=false",
    "log.tensorboard=false",
    "log.plot=false",
    "log.num_samples=1",
    "log.sample_tokens=4",
    "checkpoint.interval=4",
]


def write_text_sample(path: Path, num_chars: int = 60_000) -> Path:
    """The first `num_chars` characters of the bundled Tiny Shakespeare, as a file."""
    path.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:num_chars], encoding="utf-8")
    return path


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and then a busy machine does not slow them down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Recorder(TrainerCallback):
    """Keeps every StepResult and validation loss."""

    def __init__(self) -> None:
        self.steps: list[StepResult] = []
        self.val_losses: list[float] = []

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        self.steps.append(result)

    def on_validation(self, trainer, result) -> None:
        self.val_losses.append(result.loss)

    @property
    def losses(self) -> list[float]:
        return [r.loss for r in self.steps if not r.skipped]


def tiny_config(shard_dir: Path, *overrides: str):
    """Config of a tiny run over prepared shards (later overrides win)."""
    return load_config(None, [*TINY, f"data.shard_dir={shard_dir}", *overrides])


def run_tiny(shard_dir: Path, run_dir: Path, *overrides: str, resume=None, callbacks=()):
    """Train a tiny model; returns (summary, recorder)."""
    recorder = Recorder()
    with Trainer(
        tiny_config(shard_dir, *overrides),
        run_dir=run_dir,
        resume=resume,
        callbacks=[recorder, *callbacks],
    ) as trainer:
        summary = trainer.fit()
    return summary, recorder


def make_shards(root: Path) -> Path:
    """Token shards (10% validation) of a Tiny Shakespeare sample with a 300-token tokenizer."""
    from smallgpt.config.schema import DataSection
    from smallgpt.data.prepare import prepare_data

    text = write_text_sample(root / "sample.txt")
    data = DataSection(text_files=[str(text)], tokenizer_vocab_size=300, val_fraction=0.1)
    return prepare_data(data, root, show_progress=False).shard_dir
