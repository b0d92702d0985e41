"""Token shards on disk: `train.bin`/`val.bin` of token ids and `meta.json`, written in bounded memory."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smallgpt.checkpoint.store import sha256_file

SHARD_FORMAT = "smallgpt-token-shards"
SHARD_VERSION = 1
SPLITS = ("train", "val")
_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


_COPY_CHUNK = 1 << 22  # tokens per copy step: bounds memory whatever the file size


class _SplitWriter:
    """Appends tokens to one split's `.bin.partial` file and counts its tokens and text bytes."""

    def __init__(self, path: Path, dtype: np.dtype, byte_lengths: np.ndarray) -> None:
        self.path, self.dtype, self.byte_lengths = path, dtype, byte_lengths
        self.path.write_bytes(b"")
        self.tokens = 0
        self.text_bytes = 0

    def count(self, ids: np.ndarray) -> None:
        self.tokens += len(ids)
        self.text_bytes += int(self.byte_lengths[ids].sum())

    def append(self, ids: np.ndarray) -> None:
        with self.path.open("ab") as f:
            ids.astype(self.dtype, copy=False).tofile(f)
        self.count(ids)


def _split_file(
    path: Path,
    tokenizer: Any,
    train: _SplitWriter,
    val: _SplitWriter,
    val_fraction: float,
    show_progress: bool,
) -> int:
    """Encode `path` onto the end of train's file, move its last val_fraction to val, add eos."""
    before = train.tokens
    added = tokenizer.encode_file_to_bin(path, train.path, progress=show_progress)
    if added == 0:
        return 0  # an empty document adds nothing, not even an end-of-text token
    num_val = math.ceil(added * val_fraction)
    num_train = added - num_val
    tokens = np.memmap(train.path, dtype=train.dtype, mode="r", shape=(before + added,))
    for lo in range(before, before + num_train, _COPY_CHUNK):
        train.count(tokens[lo : min(lo + _COPY_CHUNK, before + num_train)])
    for lo in range(before + num_train, before + added, _COPY_CHUNK):
        val.append(np.array(tokens[lo : min(lo + _COPY_CHUNK, before + added)]))
    del tokens
    with train.path.open("r+b") as f:
        f.truncate((before + num_train) * train.dtype.itemsize)
    eos = np.array([tokenizer.eos_token_id])
    for writer, count in ((train, num_train), (val, num_val)):
        if count:
            writer.append(eos)
    return added


def prepare_shards(
    tokenizer: Any,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    val_fraction: float = 0.01,
    show_progress: bool = True,
) -> dict:
    """Tokenize text files into `out_dir/{train,val}.bin`, `meta.json` and `tokenizer.json`.

    Each input file is one document, followed by `<|endoftext|>` in each split it feeds. The
    validation split is the last `val_fraction` of each file's tokens (rounded up), the training
    split the rest, so both see every source. Token files are raw uint16 (vocab <= 65536) or uint32
    arrays for np.memmap. meta.json records the format version, the tokenizer's sha256, dtype,
    vocab size, token and text-byte counts per split (for bits per byte) and the sources. Files
    are streamed by the Rust encoder straight to disk and split in fixed-size chunks, so memory
    stays bounded whatever their size; show_progress gives a tqdm bar per file.
    Returns the meta dict. Raises FileNotFoundError for a missing input, ValueError for no inputs,
    val_fraction outside [0, 1) or a file that is not UTF-8.
    """
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("prepare_shards needs at least one input file")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"input file not found: {path}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no <|endoftext|> token to separate documents")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # stale until this run's shards are complete
    tokenizer.save(out / "tokenizer.json")
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
    byte_lengths = tokenizer.token_byte_lengths()
    writers = {
        name: _SplitWriter(out / f"{name}.bin.partial", dtype, byte_lengths) for name in SPLITS
    }
    sources = []
    for path in paths:
        added = _split_file(path, tokenizer, *writers.values(), val_fraction, show_progress)
        sources.append({"path": str(path.resolve()), "bytes": path.stat().st_size, "tokens": added})
    splits = {}
    for name, writer in writers.items():
        os.replace(writer.path, out / f"{name}.bin")
        splits[name] = {
            "file": f"{name}.bin",
            "tokens": writer.tokens,
            "text_bytes": writer.text_bytes,
        }
    meta = {
        "format": SHARD_FORMAT,
        "version": SHARD_VERSION,
        "dtype": dtype.name,
        "vocab_size": tokenizer.vocab_size,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tokenizer_file": "tokenizer.json",
        "tokenizer_sha256": sha256_file(out / "tokenizer.json"),
        "val_fraction": val_fraction,
        "val_split": "last val_fraction of each source file's tokens",
        "splits": splits,
        "sources": sources,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def load_meta(shard_dir: str | os.PathLike) -> dict:
    """Read and check `shard_dir/meta.json` against the token files beside it.

    Raises FileNotFoundError when meta.json or a token file is missing, ValueError when the
    format, version or dtype is unknown or a token file's size disagrees with its count.
    """
    root = Path(shard_dir)
    path = root / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no meta.json in {root}; create shards with `python -m smallgpt.data prepare`"
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != SHARD_FORMAT:
        raise ValueError(f"{path} is not a smallgpt shard description (format != {SHARD_FORMAT!r})")
    if meta.get("version") != SHARD_VERSION:
        raise ValueError(
            f"{path} has shard format version {meta.get('version')!r}; this smallgpt reads "
            f"version {SHARD_VERSION}; re-run `python -m smallgpt.data prepare`"
        )
    if meta.get("dtype") not in _DTYPES:
        raise ValueError(f"{path}: unknown token dtype {meta.get('dtype')!r}")
    itemsize = np.dtype(_DTYPES[meta["dtype"]]).itemsize
    for name in SPLITS:
        split = meta.get("splits", {}).get(name)
        if split is None:
            raise ValueError(f"{path} has no '{name}' split")
        token_file = root / split["file"]
        if not token_file.is_file():
            raise FileNotFoundError(f"token file {token_file} listed in {path} is missing")
        if token_file.stat().st_size != split["tokens"] * itemsize:
            raise ValueError(
                f"{token_file} holds {token_file.stat().st_size} bytes, but meta.json says "
                f"{split['tokens']} tokens of {meta['dtype']}; the shards are incomplete or stale"
            )
    return meta


def bytes_per_token(shard_dir: str | os.PathLike, split: str = "val") -> float:
    """Text bytes per token of a split (from meta.json): bits/byte = nats/token / ln 2 / this."""
    info = load_meta(shard_dir)["splits"][_check_split(split)]
    if info["tokens"] == 0:
        raise ValueError(f"split '{split}' of {shard_dir} is empty")
    return info["text_bytes"] / info["tokens"]
