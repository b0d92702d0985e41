"""What the trainer reports to its callbacks, and the small interface callbacks see of it.

Callbacks (health checks, early stopping, the profiler, a user's own) import this module, never the
trainer: they receive a `TrainerView` and act through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from smallgpt.evaluate.metrics import EvalResult
from smallgpt.train.distributed import DistInfo
from smallgpt.train.runtime import Runtime


class TrainingHealthWarning(UserWarning):
    """A training-health warning shown as a Python warning (when there is no progress bar)."""


class TrainerView(Protocol):
    """The part of `Trainer` a callback may use."""

    step: int  # optimizer updates done so far
    run_dir: Path
    runtime: Runtime
    dist: DistInfo
    model_config: Any  # the model's ModelConfig

    def request_stop(self, reason: str, *, last_good_step: int | None = None) -> None:
        """Stop after the current step (see `Trainer.request_stop`)."""

    def report_warning(self, kind: str, message: str) -> None:
        """Record a warning once: summary, metrics.jsonl, TensorBoard, the screen."""

    def write_line(self, text: str) -> None:
        """Print a line on rank 0, above the progress bar when there is one."""


@dataclass(frozen=True)
class StepResult:
    """One optimizer step (or skipped attempt). `step` counts updates done after it."""

    step: int
    loss: float  # mean nats per scored token over the effective batch
    grad_norm: float  # global L2 norm before clipping
    lr: float  # learning rate this step used
    tokens: int  # scored tokens in the effective batch (all ranks)
    skipped: bool  # True when non-finite values prevented the update


@dataclass(frozen=True)
class TrainSummary:
    """What a run achieved; printed at the end and saved as summary.json."""

    run_dir: str
    steps: int
    tokens_seen: int
    stop_reason: str
    wall_time_s: float
    tokens_per_s: float
    skipped_steps: int
    val_loss: float | None
    val_perplexity: float | None
    val_bits_per_byte: float | None
    best_val_loss: float | None
    checkpoint: str | None
    best_checkpoint: str | None
    warnings: tuple[str, ...] = ()  # health warnings (smallgpt.health), one per kind

    def format(self) -> str:
        """Human-readable multi-line summary."""

        def num(value: float | None, fmt: str = ".4f") -> str:
            return "n/a" if value is None else format(value, fmt)

        return "\n".join(
            [
                (
                    f"training finished ({self.stop_reason}) after {self.steps} steps, "
                    f"{self.tokens_seen:,} tokens in {self.wall_time_s:.1f} s "
                    f"({self.tokens_per_s:,.0f} tokens/s)"
                ),
                (
                    f"  validation loss {num(self.val_loss)}"
                    f"  perplexity {num(self.val_perplexity, '.2f')}"
                    f"  bits per byte {num(self.val_bits_per_byte)}"
                ),
                f"  best validation loss {num(self.best_val_loss)}",
                f"  checkpoint: {self.checkpoint}",
                f"  best checkpoint: {self.best_checkpoint}",
                f"  run directory: {self.run_dir}",
                *(f"  warning: {message}" for message in self.warnings),
            ]
        )


class TrainerCallback:
    """Hooks into the loop; subclass and override what you need (all no-ops here)."""

    def on_train_start(self, trainer: TrainerView) -> None:
        """Before the first step (after a resume has been applied)."""

    def on_step_end(self, trainer: TrainerView, result: StepResult) -> None:
        """After every optimizer step or skipped attempt."""

    def on_validation(self, trainer: TrainerView, result: EvalResult) -> None:
        """After each validation (the same numbers on every rank)."""

    def on_checkpoint(self, trainer: TrainerView, path: Path) -> None:
        """After rank 0 wrote a checkpoint."""

    def on_train_end(self, trainer: TrainerView, summary: TrainSummary) -> None:
        """After the final validation and checkpoint."""
