"""The trainer's data step: from the `data` config section to a tokenizer and token shards.

With raw `data.text_files`, a tokenizer is trained (or `data.tokenizer` loaded) and the files are
encoded into shards (`data.shard_dir`, default `<run_dir>/data`). The shard directory remembers
what it was made from (`prepared_from.json`), so a rerun or resume with the same inputs reuses it
instead of retraining the tokenizer. With only `data.shard_dir`, the shards are used as they are,
with the tokenizer they were encoded with (`<shard_dir>/tokenizer.json`, or `data.tokenizer`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallgpt.checkpoint.store import sha256_file
from smallgpt.config.loader import resolve_data_path
from smallgpt.config.schema import DataSection
from smallgpt.data.shards import load_meta, prepare_shards
from smallgpt.tokenizer.bpe import Tokenizer

PREPARED_FROM_FILE = "prepared_from.json"


@dataclass
class PreparedData:
    """A tokenizer and the shard directory encoded with it (see smallgpt.data.load_meta)."""

    tokenizer: Any
    shard_dir: Path
    meta: dict[str, Any]


def _existing(path: str, key: str) -> Path:
    resolved = resolve_data_path(path)
    if not resolved.is_file():
        raise FileNotFoundError(f"{key}: no such file {path!r} ({resolved})")
    return resolved


def _fingerprint(data: DataSection, files: list[Path], tokenizer_file: Path | None) -> dict:
    """What the shards depend on: inputs (path, size, mtime), tokenizer choice, split."""
    return {
        "text_files": [
            {"path": str(f.resolve()), "bytes": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns}
            for f in files
        ],
        "tokenizer": None if tokenizer_file is None else str(tokenizer_file.resolve()),
        "tokenizer_vocab_size": data.tokenizer_vocab_size,
        "val_fraction": data.val_fraction,
    }


def prepare_data(
    data: DataSection, run_dir: str | Path, *, show_progress: bool = True
) -> PreparedData:
    """Tokenizer and shards for a run (train/prepare them if needed). Call on one rank only.

    Raises FileNotFoundError naming the config key of a missing file, ValueError when a given
    tokenizer is not the one the shards were encoded with.
    """

    tokenizer_file = None if data.tokenizer is None else _existing(data.tokenizer, "data.tokenizer")
    if not data.text_files:
        shard_dir = Path(data.shard_dir)
        meta = load_meta(shard_dir)
        own = shard_dir / meta["tokenizer_file"]
        if tokenizer_file is not None and sha256_file(tokenizer_file) != meta["tokenizer_sha256"]:
            raise ValueError(
                f"data.tokenizer {data.tokenizer!r} is not the tokenizer the shards in "
                f"{shard_dir} were encoded with ({own}); drop data.tokenizer or re-prepare"
            )
        return PreparedData(Tokenizer.load(str(own)), shard_dir, meta)

    files = [_existing(p, f"data.text_files[{i}]") for i, p in enumerate(data.text_files)]
    shard_dir = Path(data.shard_dir) if data.shard_dir else Path(run_dir) / "data"
    fingerprint = _fingerprint(data, files, tokenizer_file)
    marker = shard_dir / PREPARED_FROM_FILE
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == fingerprint:
        meta = load_meta(shard_dir)
        return PreparedData(
            Tokenizer.load(str(shard_dir / meta["tokenizer_file"])), shard_dir, meta
        )

    if tokenizer_file is not None:
        tokenizer = Tokenizer.load(str(tokenizer_file))
    else:
        tokenizer = Tokenizer.train_files(
            [str(f) for f in files], vocab_size=data.tokenizer_vocab_size
        )
    meta = prepare_shards(
        tokenizer, files, shard_dir, val_fraction=data.val_fraction, show_progress=show_progress
    )
    marker.write_text(json.dumps(fingerprint, indent=1), encoding="utf-8")
    return PreparedData(tokenizer, shard_dir, meta)
