"""Training health checks: the guide's common issues recognised while training.

Four detectors read numbers the loop already has (loss and grad norm of every step, the
validation loss), so they cost no extra forward pass:

- divergence, from the first step on: a loss far above the uniform-prediction loss
  ln(vocab_size) or the run's first loss, or a grad norm orders of magnitude above the first
  one (the plainest case of exploding gradients, which the windowed check below misses when the
  run blows up before its window fills);
- exploding gradients: a grad norm (before clipping) far above its running median, or a
  non-finite loss or gradient;
- plateau: the smoothed training loss stops improving;
- overfitting: validation loss rising while the training loss falls, or far above it.

`HealthMonitor` runs them as a trainer callback and reports each kind of problem once: a line
above the progress bar (or a `TrainingHealthWarning` without one), an
`{"event": "warning", "kind", "step", "message"}` record in metrics.jsonl, TensorBoard text, and
the run summary. With `train.health.stop_on_divergence` (or `train.early_stopping_patience`),
a divergence also stops the run, saving nothing more. `EarlyStopping` stops a run whose
validation loss no longer improves.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import TYPE_CHECKING

from smallgpt.train.callbacks import StepResult, TrainerCallback, TrainerView
from smallgpt.train.profiling import StepProfiler

if TYPE_CHECKING:
    from smallgpt.config.schema import Config, HealthSection
    from smallgpt.evaluate.metrics import EvalResult

DIVERGENCE = "divergence"
EXPLODING_GRADIENTS = "exploding_gradients"
PLATEAU = "plateau"
OVERFITTING = "overfitting"
# After either of these, plateau and overfitting advice would be wrong (and theirs covers it).
EXPLODED = frozenset({DIVERGENCE, EXPLODING_GRADIENTS})


DIVERGENCE_ADVICE = (
    "lower optim.lr (e.g. by 10x), lengthen warm-up (optim.warmup_steps), keep optim.grad_clip "
    "at 1.0"
)


class DivergenceDetector:
    """Flags, from the first step on, a loss above `loss_factor` x the smaller of ln(vocab_size)
    (the loss of a uniform prediction) and the first step's loss, or a grad norm above
    `grad_factor` x the first step's.

    The references are the first finite step's values, so neither a warm-up nor a window of
    already-huge norms hides a run that blows up at once. Non-finite steps are left to
    `GradientSpikeDetector` (the trainer skips them).
    """

    def __init__(self, vocab_size: int, loss_factor: float, grad_factor: float) -> None:
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (got {vocab_size})")
        self.uniform_loss = math.log(vocab_size)
        self.loss_factor = loss_factor
        self.grad_factor = grad_factor
        self.first_loss: float | None = None
        self.first_norm: float | None = None

    def update(self, step: int, loss: float, grad_norm: float) -> str | None:
        """Feed one step (loss in nats per token, grad norm before clipping); return the warning
        message if this step shows divergence."""
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return None
        # A zero reference (an all-padding batch, a zero gradient) would flag any later value.
        if self.first_loss is None and loss > 0:
            self.first_loss = loss
        if self.first_norm is None and grad_norm > 0:
            self.first_norm = grad_norm
            return None
        reference = self.uniform_loss
        named = f"the uniform-prediction loss ln(vocab_size)={reference:.2f}"
        if self.first_loss is not None and self.first_loss < reference:
            reference, named = self.first_loss, f"the first step's loss {self.first_loss:.3g}"
        if loss > self.loss_factor * reference:
            return (
                f"divergence: the training loss is {loss:.3g} nats per token at step {step}, "
                f"{loss / reference:.3g}x {named} (train.health.divergence_loss_factor="
                f"{self.loss_factor:g}); {DIVERGENCE_ADVICE}"
            )
        if self.first_norm is not None and grad_norm > self.grad_factor * self.first_norm:
            return (
                f"divergence: gradient norm {grad_norm:.3g} at step {step} is "
                f"{grad_norm / self.first_norm:.3g}x the first step's {self.first_norm:.3g} "
                f"(train.health.divergence_grad_factor={self.grad_factor:g}); {DIVERGENCE_ADVICE}"
            )
        return None


class GradientSpikeDetector:
    """Flags a grad norm above `factor` x the median of the last `window` finite norms (once
    `warmup_steps` steps have passed and the window is full), or any non-finite loss or norm."""

    def __init__(self, factor: float, window: int, warmup_steps: int) -> None:
        self.factor = factor
        self.warmup_steps = warmup_steps
        self.norms: deque[float] = deque(maxlen=window)

    def update(self, step: int, loss: float, grad_norm: float) -> str | None:
        """Feed one step; return the warning message if this step shows the problem."""
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return (
                f"exploding gradients: non-finite loss ({loss}) or gradient norm ({grad_norm}) "
                f"at step {step}; lower optim.lr, keep optim.grad_clip at 1.0, check the data"
            )
        message = None
        full = len(self.norms) == self.norms.maxlen
        if step >= self.warmup_steps and full:
            median = statistics.median(self.norms)
            if grad_norm > self.factor * median:
                message = (
                    f"exploding gradients: gradient norm {grad_norm:.3g} at step {step} is "
                    f"{grad_norm / median:.0f}x the median {median:.3g} of the last "
                    f"{len(self.norms)} steps (train.health.grad_spike_factor={self.factor:g}); "
                    "lower optim.lr, keep optim.grad_clip at 1.0, check the data"
                )
        self.norms.append(grad_norm)
        return message


class PlateauDetector:
    """Flags a smoothed training loss (exponential moving average) that improved by less than
    `min_delta` nats over `window` steps, counted from `warmup_steps`."""

    def __init__(self, window: int, min_delta: float, ema_beta: float, warmup_steps: int) -> None:
        self.window = window
        self.min_delta = min_delta
        self.beta = ema_beta
        self.warmup_steps = warmup_steps
        self.ema: float | None = None
        self.best: float | None = None
        self.best_step = 0

    def update(self, step: int, loss: float) -> str | None:
        """Feed one finite training loss (nats); return the warning message on a plateau."""
        self.ema = loss if self.ema is None else self.beta * self.ema + (1 - self.beta) * loss
        if step < self.warmup_steps:
            return None
        if self.best is None or self.ema < self.best - self.min_delta:
            self.best, self.best_step = self.ema, step
            return None
        if step - self.best_step < self.window:
            return None
        return (
            f"plateau: the smoothed training loss is {self.ema:.4f} at step {step}, no better "
            f"than {self.best:.4f} at step {self.best_step} by more than "
            f"train.health.min_delta={self.min_delta:g} over {step - self.best_step} steps; "
            "raise optim.lr or lengthen warm-up (optim.warmup_steps); check that the LR "
            "schedule is stepping"
        )


class OverfitDetector:
    """Flags validation loss rising for `patience` validations in a row while the training loss
    falls, or validation loss more than `max_gap` nats above the training loss."""

    def __init__(self, patience: int, max_gap: float) -> None:
        self.patience = patience
        self.max_gap = max_gap
        self.previous: tuple[float, float] | None = None
        self.rises = 0

    def update(self, step: int, val_loss: float, train_loss: float) -> str | None:
        """Feed one validation (and the mean training loss since the previous one)."""
        if self.previous is not None:
            prev_val, prev_train = self.previous
            self.rises = self.rises + 1 if val_loss > prev_val and train_loss < prev_train else 0
        self.previous = (val_loss, train_loss)
        remedy = (
            "more dropout (model.dropout), weight decay (optim.weight_decay), or more data; "
            "the best checkpoint is kept"
        )
        if self.rises >= self.patience:
            return (
                f"overfitting: validation loss rose for {self.rises} validations in a row (now "
                f"{val_loss:.4f} at step {step}) while the training loss fell to "
                f"{train_loss:.4f}; {remedy}"
            )
        if val_loss - train_loss > self.max_gap:
            return (
                f"overfitting: validation loss {val_loss:.4f} is {val_loss - train_loss:.2f} nats "
                f"above the training loss {train_loss:.4f} at step {step} "
                f"(train.health.max_val_gap={self.max_gap:g}); {remedy}"
            )
        return None


class HealthMonitor(TrainerCallback):
    """Runs the four detectors during `Trainer.fit` and reports each kind of problem once.

    `stop_on_divergence`: a divergence also stops the run with nothing saved after the last
    step whose weights are known to be good (the step before the one whose loss diverged).
    """

    def __init__(self, cfg: HealthSection, *, stop_on_divergence: bool = False) -> None:
        self.cfg = cfg
        self.stop_on_divergence = stop_on_divergence
        self.divergence: DivergenceDetector | None = None
        self.spikes = GradientSpikeDetector(cfg.grad_spike_factor, cfg.window, cfg.warmup_steps)
        self.plateau = PlateauDetector(
            cfg.plateau_window, cfg.min_delta, cfg.ema_beta, cfg.warmup_steps
        )
        self.overfit = OverfitDetector(cfg.overfit_patience, cfg.max_val_gap)
        self.warmup_steps = cfg.warmup_steps
        self.fired: set[str] = set()
        self._loss_sum = 0.0
        self._loss_count = 0

    def _fire(self, trainer: TrainerView, kind: str, message: str | None) -> None:
        if message is not None and kind not in self.fired:
            self.fired.add(kind)
            trainer.report_warning(kind, message)

    def on_train_start(self, trainer: TrainerView) -> None:
        """Size the divergence check by the model's vocabulary (its uniform-prediction loss)."""
        self.divergence = DivergenceDetector(
            trainer.model_config.vocab_size,
            self.cfg.divergence_loss_factor,
            self.cfg.divergence_grad_factor,
        )

    def on_step_end(self, trainer: TrainerView, result: StepResult) -> None:
        """Check divergence and the gradient norm every step, the smoothed loss every finite
        step. After a divergence the other checks stay quiet (its advice covers them; plateau
        advice, which says raise optim.lr, would be wrong once the gradients exploded)."""
        if self.divergence is not None and DIVERGENCE not in self.fired:
            message = self.divergence.update(result.step, result.loss, result.grad_norm)
            self._fire(trainer, DIVERGENCE, message)
            if message is not None and self.stop_on_divergence:
                # The step's loss was measured on the weights of the update before it.
                good = result.step - 2
                trainer.request_stop(
                    f"divergence at step {result.step}; nothing saved after step {good}, "
                    "the weights before the divergence",
                    last_good_step=good,
                )
        spike = self.spikes.update(result.step, result.loss, result.grad_norm)
        if DIVERGENCE not in self.fired:
            self._fire(trainer, EXPLODING_GRADIENTS, spike)
        if result.skipped:
            return
        self._loss_sum += result.loss
        self._loss_count += 1
        plateau = self.plateau.update(result.step, result.loss)
        if self.fired.isdisjoint(EXPLODED):
            self._fire(trainer, PLATEAU, plateau)

    def on_validation(self, trainer: TrainerView, result: EvalResult) -> None:
        """Compare the validation loss with the mean training loss since the last one (after
        warm-up, and not once the gradients exploded: then the gap says nothing of overfitting)."""
        if self._loss_count == 0:
            return
        train_loss = self._loss_sum / self._loss_count
        self._loss_sum, self._loss_count = 0.0, 0
        if trainer.step < self.warmup_steps or not self.fired.isdisjoint(EXPLODED):
            return
        self._fire(trainer, OVERFITTING, self.overfit.update(trainer.step, result.loss, train_loss))


class EarlyStopping(TrainerCallback):
    """Asks the trainer to stop once validation loss has not improved for `patience` validations
    in a row; the trainer keeps the best checkpoint (`checkpoint.keep_best`)."""

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ValueError(f"early stopping patience must be >= 1 (got {patience})")
        self.patience = patience
        self.best = math.inf
        self.best_step = 0
        self.stale = 0

    def on_validation(self, trainer: TrainerView, result: EvalResult) -> None:
        """Count validations without improvement; request the stop at `patience`."""
        if result.loss < self.best:
            self.best, self.best_step, self.stale = result.loss, trainer.step, 0
            return
        self.stale += 1
        if self.stale >= self.patience:
            trainer.request_stop(
                f"early stopping: validation loss has not improved for {self.stale} validations "
                f"(train.early_stopping_patience={self.patience}); best {self.best:.4f} at step "
                f"{self.best_step}, kept as the best checkpoint"
            )


def diagnostic_callbacks(cfg: Config) -> list[TrainerCallback]:
    """The callbacks the config asks for: health checks, early stopping, the profiler (none of
    them is created when its option is off)."""
    callbacks: list[TrainerCallback] = []
    if cfg.train.health.enabled:
        # A diverged run will not improve again, so early stopping stops it at once too.
        stop = cfg.train.health.stop_on_divergence or cfg.train.early_stopping_patience > 0
        callbacks.append(HealthMonitor(cfg.train.health, stop_on_divergence=stop))
    if cfg.train.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(cfg.train.early_stopping_patience))
    if cfg.train.profile:
        callbacks.append(StepProfiler(cfg.train.profile_wait, cfg.train.profile_steps))
    return callbacks
