"""The trainer's data step: from the `data` config section to a tokenizer and token shards.

With a raw corpus in `data.text_files` (anything smallgpt.corpus reads: text, JSONL, Parquet,
compressed, directories, globs, `hf:` datasets), a tokenizer is trained (or `data.tokenizer`
loaded) from the same documents and the corpus is encoded into shards (`data.shard_dir`, default `<run_dir>/data`). The shard directory remembers
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
from smallgpt.corpus.sources import Source, resolve_sources
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


def _sources(data: DataSection) -> list[Source]:
    """The corpus of `data.text_files`; errors name the entry of the list that is wrong."""
    sources: list[Source] = []
    for i, entry in enumerate(data.text_files):
        try:
            sources += resolve_sources([str(resolve_data_path(entry))])
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"data.text_files[{i}]: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"data.text_files[{i}]: {exc}") from None
    return sources


def _fingerprint(data: DataSection, sources: list[Source], tokenizer_file: Path | None) -> dict:
    """What the shards depend on: inputs (path, size, mtime), tokenizer choice, split, fields."""
    return {
        "text_files": [s.fingerprint() for s in sources],
        "tokenizer": None if tokenizer_file is None else str(tokenizer_file.resolve()),
        "tokenizer_vocab_size": data.tokenizer_vocab_size,
        "val_fraction": data.val_fraction,
        "split_seed": data.split_seed,
        "text_field": data.text_field,
        "skip_bad_records": data.skip_bad_records,
    }


def prepare_data(
    data: DataSection, run_dir: str | Path, *, show_progress: bool = True
) -> PreparedData:
    """Tokenizer and shards for a run (train/prepare them if needed). Call on one rank only.

    Raises FileNotFoundError naming the config key of a missing file, ValueError when a given
    tokenizer is not the one the shards were encoded with, and for bad input (naming the file
    and the place; see prepare_shards).
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

    sources = _sources(data)
    shard_dir = Path(data.shard_dir) if data.shard_dir else Path(run_dir) / "data"
    fingerprint = _fingerprint(data, sources, tokenizer_file)
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
            sources,
            vocab_size=data.tokenizer_vocab_size,
            text_field=data.text_field,
            skip_bad_records=data.skip_bad_records,
        )
    meta = prepare_shards(
        tokenizer,
        sources,
        shard_dir,
        val_fraction=data.val_fraction,
        split_seed=data.split_seed,
        text_field=data.text_field,
        skip_bad_records=data.skip_bad_records,
        show_progress=show_progress,
    )
    marker.write_text(json.dumps(fingerprint, indent=1), encoding="utf-8")
    return PreparedData(tokenizer, shard_dir, meta)
