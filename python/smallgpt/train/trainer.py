"""The training loop: `Trainer` and what it reports."""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from smallgpt.checkpoint.rng import capture_rng_state
from smallgpt.checkpoint.store import (
    CheckpointManager,
    write_checkpoint,
)
from smallgpt.config.loader import config_to_dict, save_config
from smallgpt.config.schema import Config
from smallgpt.evaluate.metrics import EvalResult, peak_flops
from smallgpt.kernels.fallback import drain_fallbacks
from smallgpt.model.gpt import SmallGPT, count_real_tokens
from smallgpt.train.build import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    PLOT_FILE,
    SUMMARY_FILE,
    build_optimizer,
    load_run_data,
    open_run_logger,
    run_length,
    wrap_model,
)
from smallgpt.train.callbacks import (
    StepResult,
    TrainerCallback,
    TrainingHealthWarning,
    TrainSummary,
)
from smallgpt.train.distributed import (
    DistInfo,
    all_reduce_sum,
    gather_to_all,
    init_distributed,
    mean_over_ranks,
    shutdown_distributed,
)
from smallgpt.train.health import diagnostic_callbacks
from smallgpt.train.plot import plot_loss_curves
from smallgpt.train.progress import StepLog, progress_bar
from smallgpt.train.resume import checkpoint_at_or_before, load_for_resume, resolve_resume
from smallgpt.train.runtime import Runtime, resolve_runtime, seed_everything
from smallgpt.train.step import TrainingDivergedError, accumulate_gradients, apply_update
from smallgpt.train.stopping import StopControl
from smallgpt.train.validation import evaluate_windows, sample_texts

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "PLOT_FILE", "SUMMARY_FILE", "Trainer"]


# ----------------------------------------------------------------------------- the trainer


class Trainer:
    """Builds everything a run needs from a `Config` and trains it with `fit()`.

    run_dir: overrides `train.run_dir`. resume: None (fresh run; refuses a run directory that
    already holds checkpoints), "auto" (newest valid checkpoint of the run directory, or fresh if
    none) or a checkpoint directory. Use as a context manager, or call `close()`.
    Raises FileExistsError, CheckpointError, FileNotFoundError or ValueError before training
    when the run directory, checkpoint, data or sizes do not fit.
    """

    def __init__(
        self,
        config: Config,
        *,
        run_dir: str | Path | None = None,
        resume: str | Path | None = None,
        callbacks: Sequence[TrainerCallback] = (),
    ) -> None:
        self.cfg = copy.deepcopy(config)
        if run_dir is not None:
            self.cfg.train.run_dir = str(run_dir)
        self.run_dir = Path(self.cfg.train.run_dir)
        self.callbacks = [*diagnostic_callbacks(self.cfg), *callbacks]
        self.warnings: list[str] = []
        wants_cuda = config.train.device != "cpu" and torch.cuda.is_available()
        self.dist: DistInfo = init_distributed(use_cuda=wants_cuda)
        self.logger = None
        self._progress = None
        self._fit_start: float | None = None
        try:
            self._setup(resume)
        except BaseException:
            self.close(wait_for_others=False)
            raise

    def _setup(self, resume: str | Path | None) -> None:
        config = self.cfg
        train = config.train
        self.runtime: Runtime = resolve_runtime(
            train.device, train.precision, self.dist.local_rank, train.num_threads
        )
        seed_everything(config.train.seed + self.dist.rank)
        resume_path = resolve_resume(resume, self.run_dir, self.dist)
        data = load_run_data(config, self.run_dir, self.dist, self._show_progress)
        self.tokenizer, self.shard_dir = data.tokenizer, data.shard_dir
        self.batches, self.val_data = data.batches, data.val_data
        self._build_model()
        self.step = 0
        self.tokens_seen = 0
        self.skipped_steps = 0
        self.consecutive_nonfinite = 0
        self.best_val_loss = math.inf
        self.last_eval: EvalResult | None = None
        self._last_eval_step = -1
        self._last_saved_step = -1
        self._last_checkpoint: Path | None = None
        self._stop = StopControl(train.max_time_minutes)
        self._prior_train_time_s = 0.0
        if resume_path is not None:
            self._restore(resume_path)
        self.model = wrap_model(self.raw_model, config, self.runtime, self.dist)

        self.checkpoints = None
        if self.dist.is_main:
            self.checkpoints = CheckpointManager(
                self.run_dir / CHECKPOINT_DIR,
                config.checkpoint.keep_last,
                config.checkpoint.keep_best,
            )
            save_config(self.cfg, self.run_dir / CONFIG_FILE)
            resume_step = self.step if resume_path is not None else None
            self.logger = open_run_logger(config, self.run_dir, resume_step)

    def _build_model(self) -> None:
        tokenizer = self.tokenizer
        self.model_config = self.cfg.model.resolve(tokenizer.vocab_size, tokenizer.pad_token_id)
        device = self.runtime.device
        self.raw_model = SmallGPT.from_config(self.model_config).to(device)
        self.length = run_length(self.cfg)
        self.optimizer, self.scheduler = build_optimizer(
            self.cfg, self.raw_model, device.type, self.length, announce=self.dist.is_main
        )
        self.scaler = self.runtime.grad_scaler()
        self._flops_per_token = self.raw_model.estimate_flops_per_token(self.cfg.seq_len)
        self._peak_flops = peak_flops(device, self.cfg.log.peak_tflops)
        # UTF-8 bytes of text behind each id (0 for special tokens and unused ids): bits per byte
        lengths = self.tokenizer.token_byte_lengths(self.model_config.vocab_size)
        self._byte_lengths = torch.from_numpy(lengths).to(device)

    @property
    def _show_progress(self) -> bool:
        return self.dist.is_main and self.cfg.log.progress_bar

    # ---------------------------------------------------------------- checkpoints

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "skipped_steps": self.skipped_steps,
            "consecutive_nonfinite": self.consecutive_nonfinite,
            "best_val_loss": None if math.isinf(self.best_val_loss) else self.best_val_loss,
            "val_loss": None if self.last_eval is None else self.last_eval.loss,
            "val_step": self._last_eval_step,
            "train_time_s": self._prior_train_time_s + self._session_time(),
            "step_seconds": self.length.step_seconds,
            "world_size": self.dist.world_size,
            "data": self.batches.state_dict(),
            "rng": gather_to_all(capture_rng_state(), self.dist),
        }

    def _restore(self, path: Path) -> None:
        state = load_for_resume(
            path,
            self.raw_model,
            self.optimizer,
            self.scheduler,
            self.scaler,
            batches=self.batches,
            dist=self.dist,
            lr=self.cfg.optim.lr,
        )
        self.step = state["step"]
        self.tokens_seen = state["tokens_seen"]
        self.skipped_steps = state["skipped_steps"]
        self.consecutive_nonfinite = state["consecutive_nonfinite"]
        best = state["best_val_loss"]
        self.best_val_loss = math.inf if best is None else best
        self._prior_train_time_s = state["train_time_s"]
        if self.length.planned:  # this session's budget, planned from the last one's step time
            self.length.resume(state.get("step_seconds"))
            self.length.plan(self.step, 0.0, partial(mean_over_ranks, info=self.dist))
        self._last_saved_step = self.step
        self._last_checkpoint = path

    def save(self) -> Path | None:
        """Checkpoint the current state (collective: every rank calls it; rank 0 writes)."""
        state = self._trainer_state()
        self._last_saved_step = self.step
        if self.checkpoints is None:
            return None
        write = partial(
            write_checkpoint,
            model=self.raw_model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            state=state,
            config=config_to_dict(self.cfg),
            tokenizer=self.tokenizer,
        )
        path = self.checkpoints.save(self.step, write)
        self._last_checkpoint = path
        self._emit("on_checkpoint", path)
        return path

    # ---------------------------------------------------------------- one step

    def train_step(self) -> StepResult:
        """Run one optimizer step over grad_accum_steps micro-batches (or skip it if non-finite)."""

        device, pad = self.runtime.device, self.model_config.pad_token_id
        batches = [self.batches.next_batch() for _ in range(self.cfg.train.grad_accum_steps)]
        local_tokens = sum(int(count_real_tokens(labels, pad)) for _, labels in batches)
        total = all_reduce_sum(torch.tensor(float(local_tokens), device=device), self.dist)
        loss_sum = accumulate_gradients(
            self.model,
            batches,
            total,
            world_size=self.dist.world_size,
            autocast=self.runtime.autocast,
            scaler=self.scaler,
        )
        all_reduce_sum(loss_sum, self.dist)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip)
        loss_value, norm_value, tokens = torch.stack(
            [loss_sum / total, grad_norm.float(), total]
        ).tolist()
        lr = self.optimizer.param_groups[0]["lr"]
        skipped = not (math.isfinite(loss_value) and math.isfinite(norm_value))
        self._apply_update(skipped, loss_value)
        self.tokens_seen += int(tokens)
        return StepResult(self.step, loss_value, norm_value, lr, int(tokens), skipped)

    def _apply_update(self, skipped: bool, loss_value: float) -> None:
        failure = apply_update(
            self.optimizer, self.scheduler, self.scaler, skipped=skipped, loss=loss_value
        )
        if skipped:
            self.skipped_steps += 1
            self.consecutive_nonfinite += int(failure)
        else:
            self.step += 1
            self.consecutive_nonfinite = 0
        limit = self.cfg.train.max_nonfinite_steps
        if self.consecutive_nonfinite >= limit:
            raise TrainingDivergedError(
                f"{self.consecutive_nonfinite} steps in a row had a non-finite loss or gradient "
                f"(train.max_nonfinite_steps={limit}) at step {self.step}; lower optim.lr, check "
                f"the data, or resume from the last checkpoint ({self._last_checkpoint})"
            )

    # ---------------------------------------------------------------- validation

    def evaluate(self) -> EvalResult:
        """Loss, token and byte totals over the validation windows (collective over ranks).

        Uses the first eval_batches * batch_size * world_size windows of the split (each rank
        scores eval_batches batches; all windows when train.eval_batches is null).
        """

        return evaluate_windows(
            self.raw_model,
            self.val_data,
            batch_size=self.cfg.train.batch_size,
            eval_batches=self.cfg.train.eval_batches,
            byte_lengths=self._byte_lengths,
            runtime=self.runtime,
            dist=self.dist,
        )

    def generate_samples(self) -> list[str]:
        """`log.num_samples` continuations of `log.sample_prompt` (seeded by the step; the
        training RNG is untouched)."""
        return sample_texts(
            self.raw_model, self.tokenizer, self.cfg.log, self.cfg.train.seed + self.step
        )

    def validate(self) -> EvalResult:
        """Evaluate, log (metrics, samples, plot), save `best/` on improvement (collective)."""
        result = self.evaluate()
        self.last_eval, self._last_eval_step = result, self.step
        if self.logger is not None:
            self.logger.log(
                {
                    "kind": "val",
                    "step": self.step,
                    "val_loss": result.loss,
                    "val_ppl": result.perplexity,
                    "val_bpb": result.bits_per_byte,
                    "val_tokens": result.tokens,
                    "tokens_seen": self.tokens_seen,
                    "elapsed_s": self._session_time(),
                }
            )
            self.logger.log_samples(self.step, self.generate_samples())
            self._plot()
            if self._progress is not None:
                self._progress.write(
                    f"step {self.step}: val loss {result.loss:.4f}, ppl {result.perplexity:.2f}, "
                    f"bits/byte {result.bits_per_byte:.4f}"
                )
        self._emit("on_validation", result)
        if result.loss < self.best_val_loss:
            self.best_val_loss = result.loss
            if self.cfg.checkpoint.keep_best:
                path = self.save() if self._last_saved_step != self.step else self._last_checkpoint
                if self.checkpoints is not None and path is not None:
                    self.checkpoints.mark_best(path)
        return result

    def _plot(self) -> None:
        if self.cfg.log.plot and self.logger is not None:
            plot_loss_curves(self.logger.records, self.run_dir / PLOT_FILE)

    # ---------------------------------------------------------------- the loop

    def report_warning(self, kind: str, message: str) -> None:
        """Record a warning of `kind` (e.g. a health check's): the run summary, metrics.jsonl,
        TensorBoard text, and the screen (above the progress bar, or as a
        `TrainingHealthWarning` when there is none). Callbacks report each kind once."""
        self.warnings.append(message)
        if self.logger is not None:
            record = {"event": "warning", "kind": kind, "step": self.step, "message": message}
            self.logger.log(record)
            self.logger.log_text(f"warnings/{kind}", message, self.step)
        if not self.dist.is_main:
            return
        if self._progress is not None:
            self._progress.write(f"warning: {message}")
        else:
            warnings.warn(message, TrainingHealthWarning, stacklevel=2)

    def _report_kernel_fallbacks(self) -> None:
        """Report each Triton kernel that failed its first-use check (and now runs as PyTorch)."""
        for event in drain_fallbacks():
            self.report_warning("kernel_fallback", event.message)

    def write_line(self, text: str) -> None:
        """Print `text` on rank 0, above the progress bar when there is one."""
        if not self.dist.is_main:
            return
        if self._progress is not None:
            self._progress.write(text)
        else:
            print(text, flush=True)

    def request_stop(self, reason: str, *, last_good_step: int | None = None) -> None:
        """Ask the loop to stop after the current step (then validate and save), e.g. from a
        callback doing early stopping.

        last_good_step: the weights after this many updates are the last known good ones (a
        divergence): nothing is validated or saved from the current step on, and the summary's
        checkpoint is the newest one at or before that step (None when there is none).
        Callbacks must decide the same on every rank (loss and grad norm are global).
        """
        self._stop.request(reason, last_good_step=last_good_step)

    def _session_time(self) -> float:
        return 0.0 if self._fit_start is None else time.perf_counter() - self._fit_start

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _on_signal(self, name: str) -> None:
        if self._progress is not None:
            self._progress.write(f"{name}: finishing this step, then saving")

    def fit(self) -> TrainSummary:
        """Train until train.max_steps, the time budget, a signal or a stop request; validate and
        checkpoint at the end (a signal skips the validation). Returns the summary.

        Raises TrainingDivergedError after too many non-finite steps in a row.
        """
        self._fit_start = time.perf_counter()
        start_tokens, start_step, length = self.tokens_seen, self.step, self.length
        bar = progress_bar(self._show_progress, length.steps, self.step)
        with self._stop.signal_handlers(self._on_signal), bar as self._progress:
            self._emit("on_train_start")
            tracker = StepLog(
                logger=self.logger,
                interval=self.cfg.log.interval,
                start_step=self.step,
                max_steps=length.steps,
                max_time_minutes=self.cfg.train.max_time_minutes,
                flops_per_token=self._flops_per_token,
                peak_flops=self._peak_flops,
                world_size=self.dist.world_size,
                elapsed=self._session_time,
            )
            while self.step < length.steps and not self._stop.should_stop(
                self._session_time(), self.runtime.device, self.dist
            ):
                with length.timing("step"):
                    result = self.train_step()
                self._report_kernel_fallbacks()
                self._emit("on_step_end", result)
                tracker.update(
                    result,
                    step=self.step,
                    tokens_seen=self.tokens_seen,
                    skipped_steps=self.skipped_steps,
                    bar=self._progress,
                )
                if result.skipped or self._stop.last_good_step is not None:
                    continue
                if self.step % self.cfg.train.eval_interval == 0 and self.step < length.steps:
                    with length.timing("validation"):
                        self.validate()
                interval = self.cfg.checkpoint.interval
                if (
                    interval is not None
                    and self.step % interval == 0
                    and self._last_saved_step != self.step
                ):
                    with length.timing("checkpoint"):
                        self.save()
                if length.due(self.step, start_step) and length.plan(
                    self.step, self._session_time(), partial(mean_over_ranks, info=self.dist)
                ):
                    tracker.max_steps = length.steps
                    if self._progress is not None:
                        self._progress.total = length.steps
            stop_reason = self._stop.reason or length.end_reason()
            last_good = self._stop.last_good_step
            if last_good is not None:
                self._last_checkpoint = checkpoint_at_or_before(self.run_dir, last_good)
            else:
                if not self._stop.interrupted and self._last_eval_step != self.step:
                    self.validate()
                if self._last_saved_step != self.step:
                    self.save()
        self._progress = None
        self._report_kernel_fallbacks()
        wall = self._session_time()
        summary = self._summary(
            stop_reason, wall, (self.tokens_seen - start_tokens) / max(wall, 1e-9)
        )
        if self.logger is not None:
            (self.run_dir / SUMMARY_FILE).write_text(json.dumps(asdict(summary), indent=1))
        self._emit("on_train_end", summary)
        return summary

    def _summary(self, stop_reason: str, wall: float, tokens_per_s: float) -> TrainSummary:
        ev = self.last_eval if self._last_eval_step == self.step else None
        best_dir = self.run_dir / CHECKPOINT_DIR / "best"
        return TrainSummary(
            run_dir=str(self.run_dir),
            steps=self.step,
            tokens_seen=self.tokens_seen,
            stop_reason=stop_reason,
            wall_time_s=wall,
            tokens_per_s=tokens_per_s,
            skipped_steps=self.skipped_steps,
            val_loss=None if ev is None else ev.loss,
            val_perplexity=None if ev is None else ev.perplexity,
            val_bits_per_byte=None if ev is None else ev.bits_per_byte,
            best_val_loss=None if math.isinf(self.best_val_loss) else self.best_val_loss,
            checkpoint=None if self._last_checkpoint is None else str(self._last_checkpoint),
            best_checkpoint=str(best_dir) if best_dir.is_dir() else None,
            warnings=tuple(self.warnings),
        )

    def close(self, wait_for_others: bool = True) -> None:
        """Close the loggers and leave the process group (after a barrier unless failing)."""
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        shutdown_distributed(self.dist, barrier=wait_for_others)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.close(wait_for_others=exc_type is None)
