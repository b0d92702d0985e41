"""The training loop: `Trainer` and what it reports."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from smallgpt.checkpoint.store import (
    CheckpointManager,
    capture_rng_state,
    checkpoint_step,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    verify_checkpoint,
    write_checkpoint,
)
from smallgpt.config.loader import config_to_dict, save_config
from smallgpt.config.schema import Config
from smallgpt.data.datasets import RandomWindowBatches, TokenShardDataset
from smallgpt.data.prepare import prepare_data
from smallgpt.evaluate.lm import score_batches
from smallgpt.evaluate.metrics import EvalResult, peak_flops
from smallgpt.generate.decoding import generate_text
from smallgpt.kernels.fallback import drain_fallbacks
from smallgpt.model.gpt import SmallGPT, count_real_tokens
from smallgpt.optim.schedule import get_cosine_schedule_with_warmup
from smallgpt.train.callbacks import (
    StepResult,
    TrainerCallback,
    TrainingHealthWarning,
    TrainSummary,
)
from smallgpt.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    gather_to_all,
    init_distributed,
    shutdown_distributed,
)
from smallgpt.train.health import diagnostic_callbacks
from smallgpt.train.logger import RunLogger
from smallgpt.train.plot import plot_loss_curves
from smallgpt.train.progress import StepLog, open_progress_bar
from smallgpt.train.runtime import Runtime, resolve_runtime, seed_everything
from smallgpt.train.step import TrainingDivergedError, accumulate_gradients

if TYPE_CHECKING:
    from typing_extensions import Self

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "loss.png"


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
        resume_path = self._resolve_resume(resume)
        self._build_data()
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
        self._stop_reason: str | None = None
        self._requested_stop: str | None = None
        self._last_good_step: int | None = None
        self._signal_name: str | None = None
        self._interrupted = False
        self._prior_train_time_s = 0.0
        if resume_path is not None:
            self._restore(resume_path)
        self.model = self._wrap_model()

        self.checkpoints = None
        if self.dist.is_main:
            self.checkpoints = CheckpointManager(
                self.run_dir / CHECKPOINT_DIR,
                config.checkpoint.keep_last,
                config.checkpoint.keep_best,
            )
            save_config(self.cfg, self.run_dir / CONFIG_FILE)
            self._open_logger(resume_step=self.step if resume_path is not None else None)

    # ---------------------------------------------------------------- construction

    def _resolve_resume(self, resume: str | Path | None) -> Path | None:
        """Rank 0 picks the checkpoint (warning about corrupt ones); every rank gets its path."""
        root = self.run_dir / CHECKPOINT_DIR
        choice: str | None = None
        if self.dist.is_main:
            if resume is None:
                if find_latest_checkpoint(root) is not None:
                    raise FileExistsError(
                        f"run directory {self.run_dir} already holds checkpoints; continue it with "
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
        choice = gather_to_all(choice, self.dist)[0]
        return None if choice is None else Path(choice)

    def _build_data(self) -> None:

        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            prepared = prepare_data(self.cfg.data, self.run_dir, show_progress=self._show_progress)
        barrier(self.dist)
        if not self.dist.is_main:
            prepared = prepare_data(self.cfg.data, self.run_dir, show_progress=False)
        self.tokenizer = prepared.tokenizer
        self.shard_dir = prepared.shard_dir
        seq_len, train = self.cfg.seq_len, self.cfg.train
        self.batches = RandomWindowBatches(
            self.shard_dir,
            "train",
            seq_len=seq_len,
            batch_size=train.batch_size,
            seed=train.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.val_data = TokenShardDataset(self.shard_dir, "val", seq_len)

    def _build_model(self) -> None:

        tokenizer = self.tokenizer
        self.model_config = self.cfg.model.resolve(tokenizer.vocab_size, tokenizer.pad_token_id)
        device = self.runtime.device
        self.raw_model = SmallGPT.from_config(self.model_config).to(device)
        o = self.cfg.optim
        self.optimizer = self.raw_model.configure_optimizers(
            weight_decay=o.weight_decay,
            lr=o.lr,
            betas=o.betas,
            device_type=device.type,
            optimizer=o.name,
            eps=o.eps,
        )
        warmup_steps = self._warmup_steps()
        self.scheduler = get_cosine_schedule_with_warmup(
            self.optimizer, warmup_steps, self.cfg.train.max_steps, o.min_lr_ratio
        )
        self.scaler = self.runtime.grad_scaler()
        self._flops_per_token = self.raw_model.estimate_flops_per_token(self.cfg.seq_len)
        self._peak_flops = peak_flops(device, self.cfg.log.peak_tflops)
        # UTF-8 bytes of text behind each id (0 for special tokens and unused ids): bits per byte
        lengths = self.tokenizer.token_byte_lengths(self.model_config.vocab_size)
        self._byte_lengths = torch.from_numpy(lengths).to(device)

    def _warmup_steps(self) -> int:
        """optim.warmup_steps, shortened to train.max_steps for a run shorter than its warm-up.

        A short run of a preset (a smoke test, a profile) then warms up over all its steps and
        reaches optim.lr at the last one, with no cosine decay; it says so once.
        """
        warmup, steps = self.cfg.optim.warmup_steps, self.cfg.train.max_steps
        if warmup <= steps:
            return warmup
        if self.dist.is_main:
            print(
                f"note: optim.warmup_steps ({warmup}) exceeds train.max_steps ({steps}): the "
                f"warm-up is shortened to the run's {steps} steps (the learning rate reaches "
                "optim.lr at the last step, with no cosine decay)",
                file=sys.stderr,
            )
        return steps

    def _wrap_model(self) -> torch.nn.Module:
        model: torch.nn.Module = self.raw_model
        if self.cfg.train.compile:
            model = torch.compile(model)
        if self.dist.enabled:
            device_ids = [self.runtime.device.index] if self.runtime.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        return model

    @property
    def _show_progress(self) -> bool:
        return self.dist.is_main and self.cfg.log.progress_bar

    def _open_logger(self, resume_step: int | None) -> None:

        lg = self.cfg.log
        self.logger = RunLogger(
            self.run_dir,
            tensorboard=lg.tensorboard,
            wandb=lg.wandb,
            wandb_project=lg.wandb_project,
            wandb_run_name=lg.wandb_run_name,
            config=config_to_dict(self.cfg),
            resume_step=resume_step,
        )

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
            "world_size": self.dist.world_size,
            "data": self.batches.state_dict(),
            "rng": gather_to_all(capture_rng_state(), self.dist),
        }

    def _restore(self, path: Path) -> None:
        state = load_checkpoint(path, self.raw_model, self.optimizer, self.scheduler, self.scaler)
        if state.get("world_size") != self.dist.world_size:
            raise ValueError(
                f"checkpoint {path} was written by {state.get('world_size')} processes, this run "
                f"has {self.dist.world_size}; resume with the same number of processes"
            )
        self.step = state["step"]
        self.tokens_seen = state["tokens_seen"]
        self.skipped_steps = state["skipped_steps"]
        self.consecutive_nonfinite = state["consecutive_nonfinite"]
        best = state["best_val_loss"]
        self.best_val_loss = math.inf if best is None else best
        self._prior_train_time_s = state["train_time_s"]
        self._last_saved_step = self.step
        self._last_checkpoint = path
        self.batches.load_state_dict(state["data"])
        restore_rng_state(state["rng"][self.dist.rank])
        # The schedule's base learning rate comes back with the checkpoint (exact resume), so a
        # changed optim.lr would otherwise be ignored without a word.
        resumed_lr = max(self.scheduler.base_lrs)
        if not math.isclose(resumed_lr, self.cfg.optim.lr, rel_tol=1e-6):
            warnings.warn(
                f"resuming from {path}: the checkpoint's schedule uses optim.lr={resumed_lr:g}, "
                f"the config says optim.lr={self.cfg.optim.lr:g}; the checkpoint's value is kept "
                "(start a new run to train with another learning rate)",
                stacklevel=2,
            )

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
        if not skipped:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
            else:
                self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            self.consecutive_nonfinite = 0
        else:
            self.skipped_steps += 1
            # With fp16 loss scaling, overflowing gradients at a large scale are expected: the
            # scaler lowers the scale. They count as failures only once the scale reaches 1.
            scaler_overflow = (
                self.scaler is not None
                and math.isfinite(loss_value)
                and self.scaler.get_scale() > 1
            )
            if not scaler_overflow:
                self.consecutive_nonfinite += 1
        if self.scaler is not None:
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
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

        batch_size, eval_batches = self.cfg.train.batch_size, self.cfg.train.eval_batches
        limit = len(self.val_data)
        if eval_batches is not None:
            limit = min(limit, eval_batches * batch_size * self.dist.world_size)
        indices = list(range(self.dist.rank, limit, self.dist.world_size))
        totals = score_batches(
            self.raw_model,
            DataLoader(Subset(self.val_data, indices), batch_size=batch_size),
            device=self.runtime.device,
            byte_lengths=self._byte_lengths,
            autocast=self.runtime.autocast,
        )
        return EvalResult.from_totals(*all_reduce_sum(totals, self.dist).tolist())

    def generate_samples(self) -> list[str]:
        """`log.num_samples` continuations of `log.sample_prompt` (seeded by the step; the
        training RNG is untouched)."""

        lg = self.cfg.log
        if lg.num_samples == 0:
            return []
        return generate_text(
            self.raw_model,
            self.tokenizer,
            [lg.sample_prompt] * lg.num_samples,
            max_length=lg.sample_tokens,
            temperature=lg.sample_temperature,
            seed=self.cfg.train.seed + self.step,
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
        self._requested_stop = reason
        self._last_good_step = last_good_step

    def _should_stop(self) -> bool:
        """Whether any rank wants to stop (signal, time budget, request); all ranks agree, and
        agree whether it was a signal (which skips the final validation)."""
        reason = self._local_stop_reason()
        votes = torch.tensor(
            [float(reason is not None), float(self._signal_name is not None)],
            device=self.runtime.device,
        )
        stop_votes, signal_votes = all_reduce_sum(votes, self.dist).tolist()
        if stop_votes > 0:
            self._stop_reason = reason or "stop requested by another rank"
            self._interrupted = signal_votes > 0
        return stop_votes > 0

    def _local_stop_reason(self) -> str | None:
        if self._signal_name is not None:
            return f"signal {self._signal_name}"
        if self._requested_stop is not None:
            return self._requested_stop
        budget = self.cfg.train.max_time_minutes
        if budget is not None and self._session_time() >= budget * 60:
            return f"time budget of {budget:g} minutes reached"
        return None

    def _session_time(self) -> float:
        return 0.0 if self._fit_start is None else time.perf_counter() - self._fit_start

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        """SIGTERM/SIGINT set a flag; the loop finishes its step, saves and returns. A second
        SIGINT interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum: int, frame: Any) -> None:
            if self._signal_name is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._signal_name = signal.Signals(signum).name
            if self._progress is not None:
                self._progress.write(f"{self._signal_name}: finishing this step, then saving")

        previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def fit(self) -> TrainSummary:
        """Train until train.max_steps, the time budget, a signal or a stop request; validate and
        checkpoint at the end (a signal skips the validation). Returns the summary.

        Raises TrainingDivergedError after too many non-finite steps in a row.
        """
        self._fit_start = time.perf_counter()
        start_tokens = self.tokens_seen
        max_steps = self.cfg.train.max_steps
        with self._signal_handlers(), self._progress_bar():
            self._emit("on_train_start")
            tracker = StepLog(
                logger=self.logger,
                interval=self.cfg.log.interval,
                start_step=self.step,
                max_steps=max_steps,
                max_time_minutes=self.cfg.train.max_time_minutes,
                flops_per_token=self._flops_per_token,
                peak_flops=self._peak_flops,
                world_size=self.dist.world_size,
                elapsed=self._session_time,
            )
            while self.step < max_steps and not self._should_stop():
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
                if result.skipped or self._last_good_step is not None:
                    continue
                if self.step % self.cfg.train.eval_interval == 0 and self.step < max_steps:
                    self.validate()
                interval = self.cfg.checkpoint.interval
                if (
                    interval is not None
                    and self.step % interval == 0
                    and self._last_saved_step != self.step
                ):
                    self.save()
            stop_reason = self._stop_reason or f"reached train.max_steps={max_steps}"
            if self._last_good_step is not None:
                self._last_checkpoint = self._checkpoint_at_or_before(self._last_good_step)
            else:
                if not self._interrupted and self._last_eval_step != self.step:
                    self.validate()
                if self._last_saved_step != self.step:
                    self.save()
        self._report_kernel_fallbacks()
        wall = self._session_time()
        summary = self._summary(
            stop_reason, wall, (self.tokens_seen - start_tokens) / max(wall, 1e-9)
        )
        if self.logger is not None:
            (self.run_dir / SUMMARY_FILE).write_text(json.dumps(asdict(summary), indent=1))
        self._emit("on_train_end", summary)
        return summary

    def _checkpoint_at_or_before(self, step: int) -> Path | None:
        """The newest step checkpoint of this run at or before `step` (None if there is none)."""
        for path in list_checkpoints(self.run_dir / CHECKPOINT_DIR):
            found = checkpoint_step(path)
            if found is not None and found <= step:
                return path
        return None

    @contextlib.contextmanager
    def _progress_bar(self) -> Iterator[None]:
        if not self._show_progress:
            yield
            return

        self._progress = open_progress_bar(self.cfg.train.max_steps, self.step)
        try:
            yield
        finally:
            self._progress.close()
            self._progress = None

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
