"""What a run shows while it trains: the progress bar and a `train` record every `log.interval`
steps (mean loss, learning rate, throughput, MFU)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from tqdm.auto import tqdm

from smallgpt.evaluate.metrics import Throughput, model_flops_utilization
from smallgpt.train.callbacks import StepResult
from smallgpt.train.logger import RunLogger


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, initial: int) -> Iterator[tqdm | None]:
    """The training progress bar while open (None when not `enabled`): steps done of `total`,
    starting at `initial` (a resumed run)."""
    if not enabled:
        yield None
        return
    bar = tqdm(
        total=total,
        initial=initial,
        desc="training",
        unit="step",
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
    )
    try:
        yield bar
    finally:
        bar.close()


class StepLog:
    """Turns step results into `train` records every `interval` steps and the bar's postfix.

    `elapsed()` is the run's training time so far in seconds (this session); `max_time_minutes`
    caps the ETA; `flops_per_token`, `peak_flops` and `world_size` give the MFU (None where the
    peak is unknown).
    """

    def __init__(
        self,
        *,
        logger: RunLogger | None,
        interval: int,
        start_step: int,
        max_steps: int,
        max_time_minutes: float | None,
        flops_per_token: float,
        peak_flops: float | None,
        world_size: int,
        elapsed: Callable[[], float],
    ) -> None:
        self.logger, self.interval = logger, interval
        self.start_step, self.max_steps, self.max_time_minutes = (
            start_step,
            max_steps,
            max_time_minutes,
        )
        self.flops_per_token, self.peak_flops, self.world_size = (
            flops_per_token,
            peak_flops,
            world_size,
        )
        self.elapsed = elapsed
        self.throughput = Throughput()
        self.losses: list[float] = []
        self.tokens_per_s = 0.0
        self.mfu: float | None = None
        self.start_time = time.perf_counter()

    def update(
        self,
        result: StepResult,
        *,
        step: int,
        tokens_seen: int,
        skipped_steps: int,
        bar: tqdm | None,
    ) -> None:
        """Count `result` (the trainer is now at `step`); log a record on the interval."""
        self.throughput.add(result.tokens)
        if not result.skipped:
            self.losses.append(result.loss)
        if self.logger is not None and not result.skipped and step % self.interval == 0:
            self.tokens_per_s = self.throughput.rate()
            self.mfu = model_flops_utilization(
                self.flops_per_token, self.tokens_per_s, self.peak_flops, self.world_size
            )
            record = {
                "kind": "train",
                "step": step,
                "loss": sum(self.losses) / len(self.losses),
                "lr": result.lr,
                "grad_norm": result.grad_norm,
                "tokens_seen": tokens_seen,
                "tokens_per_s": self.tokens_per_s,
                "skipped_steps": skipped_steps,
                "elapsed_s": self.elapsed(),
            }
            if self.mfu is not None:
                record["mfu"] = self.mfu
            self.logger.log(record)
            self.losses = []
        if bar is not None:
            bar.update(step - bar.n)
            bar.set_postfix_str(self._postfix(result, step), refresh=False)

    def _postfix(self, result: StepResult, step: int) -> str:
        parts = [
            f"loss {result.loss:.4f}",
            f"lr {result.lr:.2e}",
            f"{self.tokens_per_s:,.0f} tok/s",
        ]
        if self.mfu is not None:
            parts.append(f"MFU {100 * self.mfu:.1f}%")
        done = step - self.start_step
        if done > 0:
            remaining = (time.perf_counter() - self.start_time) / done * (self.max_steps - step)
            if self.max_time_minutes is not None:
                remaining = min(remaining, max(self.max_time_minutes * 60 - self.elapsed(), 0.0))
            parts.append(f"ETA {format_seconds(remaining)}")
        return ", ".join(parts)


def format_seconds(seconds: float) -> str:
    """H:MM:SS, or M:SS under an hour."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
