"""How many steps a run takes: train.max_steps, or (train.fit_steps_to_budget) as many as the
trainer's own measured step, validation and checkpoint times fit into train.max_time_minutes.

Planning from the run itself, not from a separate timing loop, is what lets a time-budgeted run
use its whole budget on any machine: the learning-rate schedule's cosine is laid over the
planned length, so the decay ends when the budget does instead of being cut off (too many
steps) or ending early (too few).
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator

# The first steps pay one-off costs (allocator growth, autotuning, lazy init): not planned from.
_UNTIMED_STEPS = 2
# Step times are planned from the median of the latest ones: robust to a slow step (a GC pause,
# a neighbour's burst) and still following a machine that gets slower or faster.
_RECENT_STEPS = 50
# Re-plan at these steps, then every _REPLAN_EVERY steps and after each validation/checkpoint.
_EARLY_PLANS = (4, 8, 16, 32)
_REPLAN_EVERY = 25
# Validation runs forward passes only: about a third of a training step's work per batch.
_FORWARD_SHARE = 0.35


class RunLength:
    """The step count the loop runs to and the LR schedule decays over (mutable: re-planned)."""

    def __init__(
        self,
        max_steps: int,
        *,
        budget_s: float | None = None,
        eval_interval: int = 1,
        checkpoint_interval: int | None = None,
        eval_batches: int = 0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """`max_steps` is the length, or the upper limit when `budget_s` (seconds of training
        this session) is given: then `plan` fits the length to the budget. `eval_batches` is how
        many batches one validation scores (to guess its cost before one has been timed);
        `clock` times the blocks given to `timing`."""
        self.max_steps = max_steps
        self.steps = max_steps
        self.budget_s = budget_s
        self._eval_interval = eval_interval
        self._checkpoint_interval = checkpoint_interval
        self._eval_batches = eval_batches
        self._clock = clock
        self._step_times: deque[float] = deque(maxlen=_RECENT_STEPS)
        self._seen_steps = 0
        self._validation_s: float | None = None
        self._checkpoint_s = 0.0

    @property
    def planned(self) -> bool:
        """Whether the length follows the time budget (else it is train.max_steps)."""
        return self.budget_s is not None

    @contextlib.contextmanager
    def timing(self, kind: str) -> Iterator[None]:
        """Time the block as one "step", "validation" or "checkpoint" for planning."""
        start = self._clock()
        yield
        seconds = self._clock() - start
        if kind == "step":
            self._seen_steps += 1
            if self._seen_steps > _UNTIMED_STEPS:
                self._step_times.append(seconds)
        elif kind == "validation":
            self._validation_s = seconds
        else:
            self._checkpoint_s = max(self._checkpoint_s, seconds)

    @property
    def step_seconds(self) -> float | None:
        """The planned-from time of one step (None before any step was timed)."""
        return statistics.median(self._step_times) if self._step_times else None

    def resume(self, step_seconds: float | None) -> None:
        """Continue after a checkpoint whose session timed steps at `step_seconds`: plans start
        from it (this session's own steps soon take over) instead of from train.max_steps."""
        if step_seconds is not None and step_seconds > 0:
            self._step_times.append(step_seconds)

    def end_reason(self) -> str:
        """Why a run that took all its steps stopped, for the summary."""
        if self.planned and self.steps < self.max_steps:
            return f"reached the {self.steps} steps planned for the time budget"
        return f"reached train.max_steps={self.max_steps}"

    def due(self, step: int, start_step: int) -> bool:
        """Whether to re-plan after optimizer step `step` of a session that began at
        `start_step` (early and often at first, then every few steps)."""
        done = step - start_step
        return self.planned and (done in _EARLY_PLANS or done % _REPLAN_EVERY == 0)

    def plan(
        self,
        step: int,
        elapsed_s: float,
        mean_over_ranks: Callable[[list[float]], list[float]] = lambda values: values,
    ) -> bool:
        """Fit the length to what is left of the budget after `step` steps and `elapsed_s`
        seconds of this session; returns whether it changed. Never below `step` + 1 (the loop
        always takes the step it is on) nor above train.max_steps. `mean_over_ranks` averages
        the timings over the processes of a distributed run (collective), so that every rank
        plans the same length."""
        if not self.planned:
            return False
        step_s = math.nan if self.step_seconds is None else self.step_seconds
        validation_s = math.nan if self._validation_s is None else self._validation_s
        step_s, validation_s, checkpoint_s, elapsed_s = mean_over_ranks(
            [step_s, validation_s, self._checkpoint_s, elapsed_s]
        )
        if math.isnan(step_s):
            return False  # no step timed yet (on some rank)
        if math.isnan(validation_s):
            validation_s = self._eval_batches * step_s * _FORWARD_SHARE
        # Each remaining step also carries its share of the periodic validations and
        # checkpoints; the final validation and checkpoint come after the last step.
        per_step = step_s + validation_s / self._eval_interval
        if self._checkpoint_interval:
            per_step += checkpoint_s / self._checkpoint_interval
        left_s = self.budget_s - elapsed_s - validation_s - checkpoint_s
        new = min(self.max_steps, step + max(1, int(left_s / per_step)))
        changed, self.steps = new != self.steps, new
        return changed
