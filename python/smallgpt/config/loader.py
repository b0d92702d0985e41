"""Loading a configuration: YAML files and packaged presets, dotted command-line overrides, typed building
with errors that name the key (and the closest valid one), and writing it back."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from smallgpt.config.schema import Config, ConfigError, is_yaml_key, validate_config

PACKAGE_DIR = Path(__file__).resolve().parent.parent
PRESET_DIR = PACKAGE_DIR / "configs"
PACKAGE_PATH_PREFIX = "smallgpt:"


def _key_types(cls: type) -> dict[str, Any]:
    """The YAML keys of a config dataclass and their annotations (fields the tokenizer fills in
    are no keys)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if is_yaml_key(f)}


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a config dataclass: ['model.vocab_size', ..., 'optim.lr', ...]."""
    keys: list[str] = []
    for name, hint in _key_types(cls).items():
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
    hints = _key_types(cls)
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
        if dataclasses.is_dataclass(value):
            return {name: plain(getattr(value, name)) for name in _key_types(type(value))}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(cfg)


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
    hints = _key_types(Config)
    if section not in hints:
        return False
    hint = _key_types(hints[section]).get(name)
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
