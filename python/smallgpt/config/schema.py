"""The training configuration's sections: dataclasses with their defaults, and the value checks."""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, field, replace
from typing import Any, Literal


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key and what to change."""


ATTENTION_BACKENDS = ("sdpa", "triton", "auto")
_VOCAB_MULTIPLE = 64
# Marks a field that is no YAML key: its value comes from the tokenizer (see ModelConfig.resolve).
FROM_TOKENIZER = {"from_tokenizer": True}


def is_yaml_key(f: Field[Any]) -> bool:
    """Whether a config dataclass field is a YAML key (not one filled in from the tokenizer)."""
    return not f.metadata.get("from_tokenizer", False)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass
class ModelConfig:
    """The model's shape and options: the YAML's `model` section, what `SmallGPT` is built from
    and what checkpoints store (as JSON in the weights' metadata).

    vocab_size: logit columns; None (the YAML's null) means the tokenizer's vocabulary size, filled
    in by `resolve`. pad_token_id (no YAML key; `resolve` sets the tokenizer's): targets equal to
    it are not scored. attention: "sdpa" (PyTorch), "triton" (smallgpt.kernels, CUDA only) or
    "auto" (Triton on CUDA). `validate` raises ConfigError naming every bad field.
    """

    vocab_size: int | None = None
    embed_dim: int = 512
    num_heads: int = 8
    num_layers: int = 6
    max_seq_len: int = 1024
    dropout: float = 0.1
    attention: Literal["sdpa", "triton", "auto"] = "sdpa"
    bias: bool = True
    pad_token_id: int | None = field(default=None, metadata=FROM_TOKENIZER)

    def problems(self) -> list[str]:
        """What is wrong with this section, one message per problem (empty: valid)."""
        found = [
            f"model.{key} must be an integer >= 1 (got {getattr(self, key)!r})"
            for key in ("embed_dim", "num_heads", "num_layers", "max_seq_len")
            if not _is_positive_int(getattr(self, key))
        ]
        vocab = self.vocab_size
        if vocab is not None and not _is_positive_int(vocab):
            found.append(f"model.vocab_size must be an integer >= 1 or null (got {vocab!r})")
        if not found and self.embed_dim % self.num_heads != 0:
            found.append(
                f"model.embed_dim ({self.embed_dim}) must be divisible by model.num_heads "
                f"({self.num_heads})"
            )
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            found.append(f"model.dropout must be in [0, 1) (got {self.dropout!r})")
        if self.attention not in ATTENTION_BACKENDS:
            found.append(
                f"model.attention must be one of {list(ATTENTION_BACKENDS)} (got {self.attention!r})"
            )
        pad = self.pad_token_id
        if pad is not None and not (
            isinstance(pad, int) and isinstance(vocab, int) and 0 <= pad < vocab
        ):
            found.append(f"model.pad_token_id ({pad!r}) must be in [0, vocab_size={vocab}) or None")
        return found

    def validate(self) -> None:
        """Raise ConfigError listing every problem of this section."""
        _raise_if(self.problems())

    def resolve(self, vocab_size: int, pad_token_id: int | None = None) -> ModelConfig:
        """This config for a tokenizer of `vocab_size` ids whose pad id is `pad_token_id`.

        A null vocab_size becomes the tokenizer's. Raises ConfigError when a set vocab_size is
        smaller than the tokenizer's (ids would fall outside the logits).
        """
        if self.vocab_size is not None and self.vocab_size < vocab_size:
            raise ConfigError(
                f"model.vocab_size ({self.vocab_size}) is smaller than the tokenizer's vocabulary "
                f"({vocab_size}); raise it or leave it null"
            )
        resolved = replace(
            self,
            vocab_size=vocab_size if self.vocab_size is None else self.vocab_size,
            pad_token_id=pad_token_id,
        )
        resolved.validate()
        return resolved

    @property
    def head_dim(self) -> int:
        """Channels per attention head: embed_dim / num_heads."""
        return self.embed_dim // self.num_heads

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding table: vocab_size rounded up to a multiple of 64."""
        if self.vocab_size is None:
            raise ConfigError("model.vocab_size is null: resolve the config with its tokenizer")
        return -(-self.vocab_size // _VOCAB_MULTIPLE) * _VOCAB_MULTIPLE


# The YAML section's name for the same class.
ModelSection = ModelConfig


@dataclass
class DataSection:
    """Where the tokens come from.

    Either a raw corpus in `text_files` (text, JSONL, Parquet files, plain or .gz/.zst/.bz2,
    directories, glob patterns, `hf:NAME[:SPLIT]`; records give their `text_field`; the trainer
    trains a tokenizer of `tokenizer_vocab_size` unless `tokenizer` is given, and writes shards
    into `shard_dir` or `<run_dir>/data`), or prepared shards in `shard_dir` (made by
    `python -m smallgpt.data prepare`; they hold their tokenizer).
    """

    text_files: list[str] = field(default_factory=list)
    tokenizer: str | None = None
    tokenizer_vocab_size: int = 10000
    shard_dir: str | None = None
    val_fraction: float = 0.01
    seq_len: int | None = None
    text_field: str = "text"
    skip_bad_records: bool = False
    split_seed: int = 0

    def problems(self) -> list[str]:
        """What is wrong with this section, one message per problem (empty: valid)."""
        return _failing(
            (
                bool(self.text_files) or self.shard_dir is not None,
                (
                    "no training data: set data.text_files (raw text) or data.shard_dir (prepared "
                    "shards)"
                ),
            ),
            (
                self.tokenizer_vocab_size >= 258,
                (
                    "data.tokenizer_vocab_size must be >= 258 (256 bytes + 2 special tokens; "
                    f"got {self.tokenizer_vocab_size})"
                ),
            ),
            (
                0.0 < self.val_fraction < 1.0,
                f"data.val_fraction must be in (0, 1) (got {self.val_fraction})",
            ),
            (
                self.seq_len is None or self.seq_len >= 2,
                f"data.seq_len must be >= 2 (got {self.seq_len})",
            ),
            (
                bool(self.text_field),
                "data.text_field must name the field of a record that holds its text (got '')",
            ),
        )


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

    def problems(self) -> list[str]:
        """What is wrong with this section, one message per problem (empty: valid)."""
        return _failing(
            (
                self.name in OPTIMIZERS,
                f"optim.name must be one of {list(OPTIMIZERS)} (got {self.name!r})",
            ),
            (self.lr > 0 and math.isfinite(self.lr), f"optim.lr must be > 0 (got {self.lr})"),
            (
                all(0.0 <= b < 1.0 for b in self.betas),
                f"optim.betas must be in [0, 1) (got {list(self.betas)})",
            ),
            (self.eps > 0, f"optim.eps must be > 0 (got {self.eps})"),
            (
                self.weight_decay >= 0,
                f"optim.weight_decay must be >= 0 (got {self.weight_decay})",
            ),
            (
                self.warmup_steps >= 0,
                f"optim.warmup_steps must be >= 0 (got {self.warmup_steps})",
            ),
            (
                0.0 <= self.min_lr_ratio <= 1.0,
                f"optim.min_lr_ratio must be in [0, 1] (got {self.min_lr_ratio})",
            ),
            (
                self.grad_clip >= 0,
                f"optim.grad_clip must be >= 0 (0 disables clipping; got {self.grad_clip})",
            ),
        )


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

    def problems(self) -> list[str]:
        """What is wrong with this section, one message per problem (empty: valid)."""
        at_least = {"warmup_steps": 0, "min_delta": 0, "max_val_gap": 0}
        at_least |= dict.fromkeys(("window", "plateau_window", "overfit_patience"), 1)
        found = [
            f"train.health.{key} must be >= {low} (got {getattr(self, key)})"
            for key, low in at_least.items()
            if getattr(self, key) < low
        ]
        found += [
            f"train.health.{key} must be > 1 (got {getattr(self, key)})"
            for key in ("grad_spike_factor", "divergence_loss_factor", "divergence_grad_factor")
            if getattr(self, key) <= 1
        ]
        return found + _failing(
            (
                0 <= self.ema_beta < 1,
                f"train.health.ema_beta must be in [0, 1) (got {self.ema_beta})",
            )
        )


@dataclass
class TrainSection:
    """The loop: steps, batch, precision, evaluation cadence and stopping rules.

    `batch_size` is the number of sequences per micro-batch on each process; one optimizer step
    sees batch_size * grad_accum_steps * world_size sequences. `eval_batches` is the number of
    validation batches each process scores (null: the whole validation split). `num_threads`
    sets torch's CPU threads (null: torch's default, one per core).
    `fit_steps_to_budget` with `max_time_minutes` plans the run's length from its own measured
    step, validation and checkpoint times so that it, and the learning rate's cosine decay,
    ends when the budget does; `max_steps` is then the upper limit (without a budget it is the
    length, as usual). The planned length depends
    on the machine's speed, so such a run is not step-for-step reproducible elsewhere.
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
    fit_steps_to_budget: bool = False
    max_nonfinite_steps: int = 5
    early_stopping_patience: int = 0
    profile: bool = False
    profile_wait: int = 2
    profile_steps: int = 5
    health: HealthSection = field(default_factory=HealthSection)

    def problems(self) -> list[str]:
        """What is wrong with this section and its `health`, one message per problem."""
        counts = ("max_steps", "batch_size", "grad_accum_steps", "eval_interval")
        found = [
            f"train.{key} must be >= 1 (got {getattr(self, key)})"
            for key in (*counts, "max_nonfinite_steps", "profile_wait", "profile_steps")
            if getattr(self, key) < 1
        ]
        return (
            found
            + self.health.problems()
            + _failing(
                (
                    self.eval_batches is None or self.eval_batches >= 1,
                    (
                        "train.eval_batches must be >= 1, or null for the whole validation split "
                        f"(got {self.eval_batches})"
                    ),
                ),
                (
                    self.num_threads is None or self.num_threads >= 1,
                    f"train.num_threads must be >= 1 or null (got {self.num_threads})",
                ),
                (
                    self.max_time_minutes is None or self.max_time_minutes > 0,
                    f"train.max_time_minutes must be > 0 or null (got {self.max_time_minutes})",
                ),
                (
                    self.device in ("auto", "cpu") or self.device.startswith("cuda"),
                    f"train.device must be auto, cpu, cuda or cuda:N (got {self.device!r})",
                ),
                (
                    not (self.precision == "fp16" and self.device == "cpu"),
                    "train.precision fp16 needs a CUDA device; use fp32 or bf16 on CPU",
                ),
                (
                    self.early_stopping_patience >= 0,
                    (
                        "train.early_stopping_patience must be >= 0 (0 disables early stopping; "
                        f"got {self.early_stopping_patience})"
                    ),
                ),
            )
        )


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

    def problems(self) -> list[str]:
        """What is wrong with this section, one message per problem (empty: valid)."""
        return _failing(
            (self.interval >= 1, f"log.interval must be >= 1 (got {self.interval})"),
            (self.num_samples >= 0, f"log.num_samples must be >= 0 (got {self.num_samples})"),
            (
                self.sample_tokens >= 1,
                f"log.sample_tokens must be >= 1 (got {self.sample_tokens})",
            ),
            (
                self.sample_temperature > 0,
                f"log.sample_temperature must be > 0 (got {self.sample_temperature})",
            ),
            (
                self.peak_tflops is None or self.peak_tflops > 0,
                f"log.peak_tflops must be > 0 (got {self.peak_tflops})",
            ),
        )


@dataclass
class CheckpointSection:
    """When to save (every `interval` steps, at the end, on SIGTERM/SIGINT) and what to keep."""

    interval: int | None = 1000
    keep_last: int = 2
    keep_best: bool = True

    def problems(self) -> list[str]:
        """What is wrong with this section, one message per problem (empty: valid)."""
        return _failing(
            (
                self.interval is None or self.interval >= 1,
                f"checkpoint.interval must be >= 1 or null (got {self.interval})",
            ),
            (self.keep_last >= 1, f"checkpoint.keep_last must be >= 1 (got {self.keep_last})"),
        )


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


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


def _failing(*checks: tuple[bool, str]) -> list[str]:
    """The messages of the checks that fail."""
    return [message for ok, message in checks if not ok]


def validate_config(cfg: Config) -> None:
    """Check values; raise one ConfigError listing every problem (key, value, what is allowed).

    Each section checks its own keys (`problems()`); the rules that tie sections together are here.
    """
    problems = [
        p
        for section in (cfg.model, cfg.data, cfg.optim, cfg.train, cfg.log, cfg.checkpoint)
        for p in section.problems()
    ]
    d, m = cfg.data, cfg.model
    if d.seq_len is not None:
        problems += _failing(
            (
                d.seq_len <= m.max_seq_len,
                (
                    f"data.seq_len ({d.seq_len}) exceeds model.max_seq_len ({m.max_seq_len}); lower "
                    "data.seq_len or raise model.max_seq_len"
                ),
            )
        )
    _raise_if(problems)
