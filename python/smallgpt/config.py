"""Training configuration: nested dataclasses loaded from YAML, with dotted command-line overrides.

    cfg = load_config("configs/smallgpt-25m.yaml", ["optim.lr=3e-4", "train.batch_size=16"])

Every key has a type; unknown keys and wrong types raise `ConfigError` naming the key and, for an
unknown key, the closest valid one. `validate_config` checks values (positive lr, batch_size >= 1,
seq_len <= model.max_seq_len, ...) so that a bad run fails before any data is prepared.

Paths are relative to the working directory; a path starting with `smallgpt:` names a file shipped
inside the package (e.g. `smallgpt:assets/tinyshakespeare.txt`). The presets in `configs/` live in
the package (`python/smallgpt/configs/`, top-level `configs` is a symlink to it), so an installed
wheel can use them by name: `python -m smallgpt.train demo-cpu`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
PRESET_DIR = PACKAGE_DIR / "configs"
PACKAGE_PATH_PREFIX = "smallgpt:"


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


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a config dataclass: ['model.vocab_size', ..., 'optim.lr', ...]."""
    keys: list[str] = []
    for name, hint in typing.get_type_hints(cls).items():
        dotted = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            keys.extend(valid_keys(hint, dotted + "."))
        else:
            keys.append(dotted)
    return keys


# Names other trainers use for our keys (nanoGPT, Hugging Face, litgpt), so a user coming from one
# of them is pointed at the right key.
_ALIASES: dict[str, str] = {
    "learning_rate": "lr",
    "beta1": "betas",
    "beta2": "betas",
    "adam_epsilon": "eps",
    "warmup": "warmup_steps",
    "warmup_iters": "warmup_steps",
    "max_grad_norm": "grad_clip",
    "clip_grad_norm": "grad_clip",
    "max_iters": "max_steps",
    "total_steps": "max_steps",
    "num_training_steps": "max_steps",
    "micro_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum_steps",
    "n_embd": "embed_dim",
    "d_model": "embed_dim",
    "hidden_size": "embed_dim",
    "n_head": "num_heads",
    "n_layer": "num_layers",
    "block_size": "max_seq_len",
    "context_length": "max_seq_len",
    "out_dir": "run_dir",
    "output_dir": "run_dir",
}


def _suggest(key: str) -> str:
    """'; did you mean X?' for the closest valid key: a known alias, the same name in another
    section, a near name in the (nearest) section, or a near name anywhere (in that order)."""
    keys = valid_keys()
    sections = sorted({k.partition(".")[0] for k in keys})
    section, _, leaf = key.rpartition(".")
    by_leaf: dict[str, list[str]] = {}
    for k in keys:
        by_leaf.setdefault(k.rpartition(".")[2], []).append(k)
    if section not in sections:
        near_section = difflib.get_close_matches(section, sections, n=1, cutoff=0.6)
        section = near_section[0] if near_section else section

    def prefer_section(candidates: list[str]) -> str:
        same = [c for c in candidates if c.startswith(section + ".")]
        return (same or candidates)[0]

    found: str | None = None
    if leaf in by_leaf:
        found = prefer_section(by_leaf[leaf])
    elif _ALIASES.get(leaf) in by_leaf:
        found = prefer_section(by_leaf[_ALIASES[leaf]])
    else:
        in_section = [k.rpartition(".")[2] for k in keys if k.startswith(section + ".")]
        near = difflib.get_close_matches(leaf, in_section, n=1, cutoff=0.6)
        if near:
            found = f"{section}.{near[0]}"
        else:
            near = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.75)
            found = prefer_section(by_leaf[near[0]]) if near else None
    return f"; did you mean '{found}'?" if found else ""


# ----------------------------------------------------------------------------- typed building


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        return str(hint).replace("typing.", "")
    if origin is not None:
        return " | ".join(_type_name(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else hint.__name__


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `hint`; return it converted ('3e-4' -> float)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        if value in args:
            return value
        near = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint_text = f"; did you mean '{near[0]}'?" if near else ""
        choices = ", ".join(str(a) for a in args)
        raise ConfigError(f"{key}: {value!r} is not one of {choices}{hint_text}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(inner[0], value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list ({_type_name(hint)}), got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(
            _coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if hint is bool and isinstance(value, bool):
        return value
    if hint in (int, float):
        number = _as_number(value)
        if number is not None and (hint is float or float(number).is_integer()):
            return hint(number)
    if hint is str and isinstance(value, str):
        return value
    raise ConfigError(f"{key}: expected {_type_name(hint)}, got {type(value).__name__} {value!r}")


def _as_number(value: Any) -> float | int | None:
    """An int/float (bools excluded) or a numeric string such as '3e-4' (YAML reads it as str)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    for key in data:
        if key in hints:
            continue
        if not prefix:
            near = difflib.get_close_matches(str(key), list(hints), n=1)
            hint_text = f"; did you mean '{near[0]}'?" if near else ""
            raise ConfigError(f"unknown section '{key}'{hint_text} (sections: {', '.join(hints)})")
        raise ConfigError(f"unknown key '{prefix}{key}'{_suggest(prefix + str(key))}")
    values = {}
    for name, hint in hints.items():
        if name not in data:
            continue
        dotted = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, data[name], dotted + ".")
        else:
            values[name] = _coerce(hint, data[name], dotted)
    return cls(**values)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a `Config` from nested plain data (as read from YAML); missing keys take defaults.

    Raises ConfigError for unknown keys and wrong types.
    """
    return _build(Config, data, "")


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Nested plain data (tuples as lists) that `config_from_dict` reads back to an equal Config."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


# ----------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """Split 'optim.lr=3e-4' into ('optim.lr', value parsed as YAML: '[a, b]' is a list).

    For a text key the raw text is kept when YAML would read something else ('ROMEO:' is a
    mapping in YAML). Raises ConfigError when there is no '=' or the key is empty.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"override {text!r} must look like section.key=value (e.g. optim.lr=3e-4)"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if value is not None and not isinstance(value, str) and _is_text_key(key):
        value = raw
    return key, value


def _is_text_key(key: str) -> bool:
    section, _, name = key.partition(".")
    hints = typing.get_type_hints(Config)
    if section not in hints:
        return False
    hint = typing.get_type_hints(hints[section]).get(name)
    return hint is str or hint == (str | None)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of nested `data` with each 'section.key=value' override set.

    Raises ConfigError for a malformed override or an unknown key (with the closest valid one).
    """
    out = copy.deepcopy(data)
    keys = valid_keys()
    sections = {k.partition(".")[0] for k in keys}
    for text in overrides:
        key, value = parse_override(text)
        if key in sections:
            raise ConfigError(f"'{key}' is a section; set one of its keys, e.g. {key}.<name>=value")
        if key not in keys:
            raise ConfigError(f"unknown key '{key}'{_suggest(key)}")
        *path, name = key.split(".")
        section = out
        for depth in range(len(path)):
            section = section.setdefault(path[depth], {})
            if not isinstance(section, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"'{where}' must be a mapping of keys, got {section!r}")
        section[name] = value
    return out


# ----------------------------------------------------------------------------- files


def resolve_config_path(name: str | Path) -> Path:
    """A config file path, or the name of a packaged preset ('demo-cpu' or 'demo-cpu.yaml').

    Raises FileNotFoundError listing the presets when neither exists.
    """
    path = Path(name)
    if path.is_file():
        return path
    preset = PRESET_DIR / (path.name if path.suffix else f"{path.name}.yaml")
    if preset.is_file():
        return preset
    presets = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"config file {str(name)!r} not found (packaged presets: {presets})")


def resolve_data_path(path: str) -> Path:
    """Turn a config path into a filesystem path ('smallgpt:x' -> file x inside the package)."""
    if path.startswith(PACKAGE_PATH_PREFIX):
        return PACKAGE_DIR / path[len(PACKAGE_PATH_PREFIX) :]
    return Path(path)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or preset name; None: defaults only), apply overrides, validate.

    Raises FileNotFoundError for a missing file and ConfigError for bad keys, types or values.
    """
    data: dict[str, Any] = {}
    if path is not None:
        file = resolve_config_path(path)
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: top level must be a mapping of sections, got {data!r}")
    cfg = config_from_dict(apply_overrides(data, list(overrides)))
    validate_config(cfg)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (what `load_config` reads back unchanged)."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    Path(path).write_text(text, encoding="utf-8")


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
