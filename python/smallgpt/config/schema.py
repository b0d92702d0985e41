"""The training configuration's sections: dataclasses with their defaults, and the value checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key and what to change."""


@dataclass
class ModelSection:
    """Architecture of `smallgpt.model.SmallGPT` (its `ModelConfig`, whose pad_token_id comes from
    the tokenizer). vocab_size None: the tokenizer's vocabulary size.
    attention: "sdpa" (PyTorch), "triton" (smallgpt.kernels, CUDA only) or "auto" (Triton on CUDA).
    """

    vocab_size: int | None = None
    embed_dim: int = 512
    num_heads: int = 8
    num_layers: int = 6
    max_seq_len: int = 1024
    dropout: float = 0.1
    attention: Literal["sdpa", "triton", "auto"] = "sdpa"
    bias: bool = True


@dataclass
class DataSection:
    """Where the tokens come from.

    Either raw `text_files` (the trainer trains a tokenizer of `tokenizer_vocab_size` unless
    `tokenizer` is given, and writes shards into `shard_dir` or `<run_dir>/data`), or prepared
    shards in `shard_dir` (made by `python -m smallgpt.data prepare`; they hold their tokenizer).
    """

    text_files: list[str] = field(default_factory=list)
    tokenizer: str | None = None
    tokenizer_vocab_size: int = 10000
    shard_dir: str | None = None
    val_fraction: float = 0.01
    seq_len: int | None = None


OPTIMIZERS = ("adamw", "muon")


@dataclass
class OptimSection:
    """The optimizer and its learning-rate schedule (linear warmup, cosine decay to
    lr * min_lr_ratio). `name`: "adamw", or "muon" (Muon on the blocks' matrices, AdamW on the
    rest; see smallgpt.optim)."""

    name: str = "adamw"
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_steps: int = 2000
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0


@dataclass
class HealthSection:
    """Thresholds of the training health checks (`smallgpt.health`); each warns once per run.

    Exploding gradients: a grad norm (before clipping) above `grad_spike_factor` times the median
    of the last `window` steps, after `warmup_steps`, or a non-finite loss or gradient. Plateau:
    the smoothed training loss (EMA with `ema_beta`) improved by less than `min_delta` nats over
    `plateau_window` steps after warm-up. Overfitting: validation loss rising for
    `overfit_patience` validations in a row while the training loss falls, or validation loss
    more than `max_val_gap` nats above the training loss. Divergence, checked from the first step:
    a loss above `divergence_loss_factor` times the smaller of ln(vocab size) (the loss of a
    uniform prediction) and the run's first loss, or a grad norm above `divergence_grad_factor`
    times the first one. `stop_on_divergence` then stops the run (as does
    `train.early_stopping_patience` > 0) and saves nothing more, so the last checkpoint before
    the divergence is the run's last.
    """

    enabled: bool = True
    warmup_steps: int = 20
    window: int = 20
    grad_spike_factor: float = 10.0
    ema_beta: float = 0.98
    plateau_window: int = 500
    min_delta: float = 0.01
    overfit_patience: int = 3
    max_val_gap: float = 1.0
    divergence_loss_factor: float = 2.0
    divergence_grad_factor: float = 100.0
    stop_on_divergence: bool = False


@dataclass
class TrainSection:
    """The loop: steps, batch, precision, evaluation cadence and stopping rules.

    `batch_size` is the number of sequences per micro-batch on each process; one optimizer step
    sees batch_size * grad_accum_steps * world_size sequences. `eval_batches` is the number of
    validation batches each process scores (null: the whole validation split). `num_threads`
    sets torch's CPU threads (null: torch's default, one per core).
    `early_stopping_patience` K > 0 stops once validation loss has not improved for K
    validations in a row (0: off). `profile` runs torch.profiler over `profile_steps` steps after
    `profile_wait` warm-up steps and writes the traces under `<run_dir>/profile`.
    """

    run_dir: str = "runs/default"
    max_steps: int = 100_000
    batch_size: int = 16
    grad_accum_steps: int = 1
    seed: int = 1337
    device: str = "auto"
    num_threads: int | None = None
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    eval_interval: int = 500
    eval_batches: int | None = 50
    max_time_minutes: float | None = None
    max_nonfinite_steps: int = 5
    early_stopping_patience: int = 0
    profile: bool = False
    profile_wait: int = 2
    profile_steps: int = 5
    health: HealthSection = field(default_factory=HealthSection)


@dataclass
class LogSection:
    """What the user sees: progress bar, metrics.jsonl, TensorBoard, W&B, samples and the plot."""

    interval: int = 10
    progress_bar: bool = True
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "smallgpt"
    wandb_run_name: str | None = None
    plot: bool = True
    num_samples: int = 2
    sample_prompt: str = "\n"
    sample_tokens: int = 100
    sample_temperature: float = 0.8
    peak_tflops: float | None = None


@dataclass
class CheckpointSection:
    """When to save (every `interval` steps, at the end, on SIGTERM/SIGINT) and what to keep."""

    interval: int | None = 1000
    keep_last: int = 2
    keep_best: bool = True


@dataclass
class Config:
    """The whole training configuration."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    log: LogSection = field(default_factory=LogSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)

    @property
    def seq_len(self) -> int:
        """Training window length in tokens: `data.seq_len`, or `model.max_seq_len` when unset."""
        return self.data.seq_len if self.data.seq_len is not None else self.model.max_seq_len


# ----------------------------------------------------------------------------- key lookup


# ----------------------------------------------------------------------------- value checks


def validate_config(cfg: Config) -> None:
    """Check values; raise one ConfigError listing every problem (key, value, what is allowed)."""
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    m, d, o, t, lg, ck = cfg.model, cfg.data, cfg.optim, cfg.train, cfg.log, cfg.checkpoint
    for key in ("embed_dim", "num_heads", "num_layers", "max_seq_len"):
        need(getattr(m, key) >= 1, f"model.{key} must be >= 1 (got {getattr(m, key)})")
    need(
        m.vocab_size is None or m.vocab_size >= 1,
        f"model.vocab_size must be >= 1 (got {m.vocab_size})",
    )
    need(
        m.num_heads < 1 or m.embed_dim % m.num_heads == 0,
        f"model.embed_dim ({m.embed_dim}) must be divisible by model.num_heads ({m.num_heads})",
    )
    need(0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1) (got {m.dropout})")

    need(
        bool(d.text_files) or d.shard_dir is not None,
        "no training data: set data.text_files (raw text) or data.shard_dir (prepared shards)",
    )
    need(
        d.tokenizer_vocab_size >= 258,
        "data.tokenizer_vocab_size must be >= 258 (256 bytes + 2 special tokens; "
        f"got {d.tokenizer_vocab_size})",
    )
    need(0.0 < d.val_fraction < 1.0, f"data.val_fraction must be in (0, 1) (got {d.val_fraction})")
    if d.seq_len is not None:
        need(d.seq_len >= 2, f"data.seq_len must be >= 2 (got {d.seq_len})")
        need(
            d.seq_len <= m.max_seq_len,
            f"data.seq_len ({d.seq_len}) exceeds model.max_seq_len ({m.max_seq_len}); lower "
            "data.seq_len or raise model.max_seq_len",
        )

    need(o.name in OPTIMIZERS, f"optim.name must be one of {list(OPTIMIZERS)} (got {o.name!r})")
    need(o.lr > 0 and math.isfinite(o.lr), f"optim.lr must be > 0 (got {o.lr})")
    need(
        all(0.0 <= b < 1.0 for b in o.betas), f"optim.betas must be in [0, 1) (got {list(o.betas)})"
    )
    need(o.eps > 0, f"optim.eps must be > 0 (got {o.eps})")
    need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0 (got {o.weight_decay})")
    need(o.warmup_steps >= 0, f"optim.warmup_steps must be >= 0 (got {o.warmup_steps})")
    need(
        0.0 <= o.min_lr_ratio <= 1.0, f"optim.min_lr_ratio must be in [0, 1] (got {o.min_lr_ratio})"
    )
    need(o.grad_clip >= 0, f"optim.grad_clip must be >= 0 (0 disables clipping; got {o.grad_clip})")

    for key in (
        "max_steps",
        "batch_size",
        "grad_accum_steps",
        "eval_interval",
        "max_nonfinite_steps",
    ):
        need(getattr(t, key) >= 1, f"train.{key} must be >= 1 (got {getattr(t, key)})")
    need(
        t.eval_batches is None or t.eval_batches >= 1,
        "train.eval_batches must be >= 1, or null for the whole validation split "
        f"(got {t.eval_batches})",
    )
    need(
        t.num_threads is None or t.num_threads >= 1,
        f"train.num_threads must be >= 1 or null (got {t.num_threads})",
    )
    need(
        t.max_time_minutes is None or t.max_time_minutes > 0,
        f"train.max_time_minutes must be > 0 or null (got {t.max_time_minutes})",
    )
    need(
        t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"),
        f"train.device must be auto, cpu, cuda or cuda:N (got {t.device!r})",
    )
    need(
        not (t.precision == "fp16" and t.device == "cpu"),
        "train.precision fp16 needs a CUDA device; use fp32 or bf16 on CPU",
    )

    need(
        t.early_stopping_patience >= 0,
        "train.early_stopping_patience must be >= 0 (0 disables early stopping; "
        f"got {t.early_stopping_patience})",
    )
    need(t.profile_wait >= 1, f"train.profile_wait must be >= 1 (got {t.profile_wait})")
    need(t.profile_steps >= 1, f"train.profile_steps must be >= 1 (got {t.profile_steps})")
    h = t.health
    for key in ("warmup_steps", "min_delta", "max_val_gap"):
        need(getattr(h, key) >= 0, f"train.health.{key} must be >= 0 (got {getattr(h, key)})")
    for key in ("window", "plateau_window", "overfit_patience"):
        need(getattr(h, key) >= 1, f"train.health.{key} must be >= 1 (got {getattr(h, key)})")
    for key in ("grad_spike_factor", "divergence_loss_factor", "divergence_grad_factor"):
        need(getattr(h, key) > 1, f"train.health.{key} must be > 1 (got {getattr(h, key)})")
    need(0 <= h.ema_beta < 1, f"train.health.ema_beta must be in [0, 1) (got {h.ema_beta})")

    need(lg.interval >= 1, f"log.interval must be >= 1 (got {lg.interval})")
    need(lg.num_samples >= 0, f"log.num_samples must be >= 0 (got {lg.num_samples})")
    need(lg.sample_tokens >= 1, f"log.sample_tokens must be >= 1 (got {lg.sample_tokens})")
    need(
        lg.sample_temperature > 0,
        f"log.sample_temperature must be > 0 (got {lg.sample_temperature})",
    )
    need(
        lg.peak_tflops is None or lg.peak_tflops > 0,
        f"log.peak_tflops must be > 0 (got {lg.peak_tflops})",
    )

    need(
        ck.interval is None or ck.interval >= 1,
        f"checkpoint.interval must be >= 1 or null (got {ck.interval})",
    )
    need(ck.keep_last >= 1, f"checkpoint.keep_last must be >= 1 (got {ck.keep_last})")
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))
