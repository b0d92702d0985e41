"""Checkpoint directories: atomic writes, sha256 manifests, verification, reading and a run's rotation.

Imports nothing of smallgpt: the layers above give it models, optimizers, configs and tokenizers."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from safetensors.torch import load_model as _load_weights
from safetensors.torch import save_model as _save_weights

FORMAT = "smallgpt-checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
MODEL_CONFIG_KEY = "smallgpt.model_config"
BEST_NAME = "best"
_STEP_DIR = re.compile(r"^step_(\d+)$")
# Optimizer flags that describe how the update runs on this machine, not the optimization itself:
# a run resumed on another device keeps the values of the optimizer it builds there.
_IMPLEMENTATION_FLAGS = ("foreach", "fused", "capturable", "differentiable")


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete or corrupt; the message names the file."""


# ----------------------------------------------------------------------------- small helpers


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP (`.module`) and `torch.compile` (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _fsync_path(path: Path) -> None:
    """Flush a file's (or, on POSIX, a directory's) contents to disk."""
    if path.is_dir() and os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_jsonable(value: Any) -> Any:
    """Plain JSON data for `value`: tuples become lists, tensors and arrays become tagged base64.

    Raises TypeError for anything else that JSON cannot hold (no pickle fallback).
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        is_tensor = isinstance(value, torch.Tensor)
        array = np.ascontiguousarray(value.detach().cpu().numpy() if is_tensor else value)
        return {
            "__ndarray__": base64.b64encode(array.tobytes()).decode("ascii"),
            "dtype": str(array.dtype),
            "shape": list(array.shape),
            "torch": is_tensor,
        }
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint's state.json")


def from_jsonable(value: Any) -> Any:
    """Inverse of `to_jsonable` for tensors and arrays (lists stay lists)."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            raw = base64.b64decode(value["__ndarray__"])
            array = (
                np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
            )
            return torch.from_numpy(array) if value["torch"] else array
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value


# ----------------------------------------------------------------------------- optimizer state


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON data."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = to_jsonable(value)
    groups = [to_jsonable(g) for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalar_state": scalars}


def _load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    for key, value in meta["scalar_state"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = from_jsonable(value)
    if len(meta["param_groups"]) != len(optimizer.param_groups):
        raise CheckpointError(
            f"optimizer has {len(optimizer.param_groups)} param groups, checkpoint has "
            f"{len(meta['param_groups'])}"
        )
    groups = []
    for saved, current in zip(meta["param_groups"], optimizer.param_groups, strict=True):
        group = {k: (tuple(v) if k == "betas" else v) for k, v in from_jsonable(saved).items()}
        group.update({k: current[k] for k in _IMPLEMENTATION_FLAGS if k in current})
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ----------------------------------------------------------------------------- writing


def _model_config(model: torch.nn.Module) -> dict[str, Any] | None:
    config = getattr(model, "config", None)
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def write_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    *,
    state: dict[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    tokenizer: Any | None = None,
) -> Path:
    """Atomically write a checkpoint directory at `path` (replacing one already there).

    `model` may be wrapped in DDP or torch.compile; its plain module's weights are saved (no
    `_orig_mod.` prefix). `state` is extra JSON-able trainer state (step, tokens seen, data
    position, RNG states, ...). `config` is the training config as a plain dict (`config_to_dict`), written as YAML; `tokenizer` anything with
    `save(path)`. Returns the checkpoint path. On any error the target is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_contents(tmp, model, optimizer, scheduler, scaler, state, config, tokenizer)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_contents(
    tmp: Path, model, optimizer, scheduler, scaler, state, config, tokenizer
) -> None:
    plain = unwrap_model(model)
    model_config = _model_config(plain)
    metadata = {"format": FORMAT, "version": str(VERSION)}
    if model_config is not None:
        metadata[MODEL_CONFIG_KEY] = json.dumps(model_config)
    _save_weights(plain, str(tmp / MODEL_FILE), metadata=metadata)

    record: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    if optimizer is not None:
        tensors, record["optimizer"] = _optimizer_parts(optimizer)
        save_file(tensors, str(tmp / OPTIMIZER_FILE), metadata={"format": FORMAT})
    if scheduler is not None:
        record["scheduler"] = to_jsonable(scheduler.state_dict())
    if scaler is not None:
        record["scaler"] = to_jsonable(scaler.state_dict())
    record["trainer"] = to_jsonable(state or {})
    _write_json(tmp / STATE_FILE, record)
    if config is not None:
        text = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None)
        (tmp / CONFIG_FILE).write_text(text, encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save(str(tmp / TOKENIZER_FILE))

    files = sorted(p for p in tmp.iterdir() if p.is_file())
    for file in files:
        _fsync_path(file)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "files": {f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size} for f in files},
    }
    _write_json(tmp / MANIFEST_FILE, manifest)
    _fsync_path(tmp / MANIFEST_FILE)
    _fsync_path(tmp)


def _replace_dir(new: Path, target: Path) -> None:
    """Rename the finished `new` to `target`; an existing target is moved aside first."""
    old = None
    if target.exists():
        old = target.parent / f".old-{target.name}-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
    os.rename(new, target)
    _fsync_path(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def link_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Atomically make `target` a copy of the verified checkpoint `source` (hard links when the
    filesystem allows, so `best/` costs no space while its step directory exists)."""
    source, target = Path(source), Path(target)
    verify_checkpoint(source)
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        for file in source.iterdir():
            try:
                os.link(file, tmp / file.name)
            except OSError:
                shutil.copy2(file, tmp / file.name)
                _fsync_path(tmp / file.name)
        _fsync_path(tmp)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# ----------------------------------------------------------------------------- verifying


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check every file against the manifest; return the manifest.

    Raises CheckpointError naming the directory and the offending file: missing directory or
    manifest, unreadable manifest, a listed file missing, truncated (size) or changed (sha256).
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a directory")
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        inner = sorted(p.name for p in path.iterdir() if (p / MANIFEST_FILE).is_file())
        hint = f"; it contains checkpoints: {', '.join(inner)}" if inner else ""
        raise CheckpointError(
            f"checkpoint {path}: missing {MANIFEST_FILE} (incomplete or not a checkpoint){hint}"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r} is not {FORMAT!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable {MANIFEST_FILE}: {exc}") from exc
    for required in (MODEL_FILE, STATE_FILE):
        if required not in files:
            raise CheckpointError(f"checkpoint {path}: {MANIFEST_FILE} does not list {required}")
    for name, entry in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path}: {name} is missing")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(
                f"checkpoint {path}: {name} has {size} bytes, manifest says "
                f"{entry['bytes']} (truncated?)"
            )
        if sha256_file(file) != entry["sha256"]:
            raise CheckpointError(f"checkpoint {path}: {name} does not match its sha256 (corrupt)")
    return manifest


def checkpoint_step(path: str | Path) -> int | None:
    """The step number encoded in a `step_<n>` directory name, else None."""
    match = _STEP_DIR.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(root: str | Path) -> list[Path]:
    """The `step_<n>` directories under `root`, newest (highest step) first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p), reverse=True)


def find_latest_checkpoint(root: str | Path) -> Path | None:
    """The newest `step_<n>` checkpoint under `root` whose manifest verifies, or None.

    Corrupt or incomplete ones are skipped with a warning naming the bad file.
    """
    for candidate in list_checkpoints(root):
        try:
            verify_checkpoint(candidate)
        except CheckpointError as exc:
            warnings.warn(f"skipping {exc}", stacklevel=2)
            continue
        return candidate
    return None


# ----------------------------------------------------------------------------- reading


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
) -> dict[str, Any]:
    """Verify the checkpoint, load what is given into the objects, return the trainer state.

    Raises CheckpointError for a corrupt checkpoint, one lacking optimizer state that was asked
    for, or weights that do not fit `model` (naming the model config fields that differ).
    """
    path = Path(path)
    verify_checkpoint(path)
    plain = unwrap_model(model)
    device = next(plain.parameters()).device
    try:
        _load_weights(plain, str(path / MODEL_FILE), strict=True, device=str(device))
    except RuntimeError as exc:
        raise _weights_do_not_fit(path, plain, exc) from exc
    record = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    if optimizer is not None:
        if "optimizer" not in record:
            raise CheckpointError(f"checkpoint {path}: has no optimizer state ({OPTIMIZER_FILE})")
        _load_optimizer(optimizer, load_file(str(path / OPTIMIZER_FILE)), record["optimizer"])
    if scheduler is not None and "scheduler" in record:
        scheduler.load_state_dict(from_jsonable(record["scheduler"]))
    if scaler is not None and record.get("scaler"):
        scaler.load_state_dict(from_jsonable(record["scaler"]))
    return from_jsonable(record.get("trainer", {}))


def _weights_do_not_fit(path: Path, model: torch.nn.Module, exc: RuntimeError) -> CheckpointError:
    """The error for a checkpoint whose weights have other names or shapes than `model`'s."""
    saved, current = read_model_config(path), _model_config(model) or {}
    differences = [
        f"{key}: checkpoint {saved[key]!r}, model {current[key]!r}"
        for key in sorted(saved.keys() & current.keys())
        if saved[key] != current[key]
    ]
    detail = "; ".join(differences) or str(exc).strip().splitlines()[0]
    return CheckpointError(
        f"checkpoint {path}: its weights do not fit this model ({detail}); use the model config "
        "the checkpoint was trained with (its config.yaml)"
    )


def read_model_config(path: str | Path) -> dict[str, Any]:
    """The model config stored in a checkpoint's (or a bare model.safetensors') metadata."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    with safe_open(str(file), framework="pt") as f:
        metadata = f.metadata() or {}
    if MODEL_CONFIG_KEY not in metadata:
        raise CheckpointError(f"{file}: no model config in the safetensors metadata")
    return json.loads(metadata[MODEL_CONFIG_KEY])


# ----------------------------------------------------------------------------- a run's checkpoints


class CheckpointManager:
    """The checkpoints of one run under `root`: `step_<n>/` (the last `keep_last`) and `best/`."""

    def __init__(self, root: str | Path, keep_last: int = 2, keep_best: bool = True) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 (got {keep_last})")
        self.root = Path(root)
        self.keep_last = keep_last
        self.keep_best = keep_best
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        """Hidden directories left by a crash during a save are garbage: nothing refers to them."""
        if self.root.is_dir():
            for leftover in self.root.glob(".tmp-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            for leftover in self.root.glob(".old-*"):
                shutil.rmtree(leftover, ignore_errors=True)

    def path_for(self, step: int) -> Path:
        """Directory of the checkpoint at `step`."""
        return self.root / f"step_{step:08d}"

    @property
    def best_path(self) -> Path:
        """Directory of the best checkpoint by validation loss."""
        return self.root / BEST_NAME

    def save(self, step: int, write: Callable[[Path], Path]) -> Path:
        """Write the step's checkpoint with `write(path)` (e.g. a partial `write_checkpoint`) and
        delete all but the newest `keep_last` step checkpoints."""
        path = write(self.path_for(step))
        for old in list_checkpoints(self.root)[self.keep_last :]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def mark_best(self, path: str | Path) -> Path | None:
        """Make `best/` a copy of the checkpoint at `path` (no-op when keep_best is off)."""
        if not self.keep_best:
            return None
        return link_checkpoint(path, self.best_path)

    def latest(self) -> Path | None:
        """The newest verified step checkpoint (corrupt ones skipped with a warning)."""
        return find_latest_checkpoint(self.root)
