"""Token data for training and evaluation.

- `TextDataset`: the user's guide's in-memory dataset of overlapping windows over a few texts.
- `prepare_shards` (CLI: `python -m smallgpt.data prepare ...`): tokenizes text files through the Rust
  encoder into memory-mapped `train.bin` / `val.bin` token files plus `meta.json`.
- `TokenShardDataset`: sequential evaluation windows over a shard split (DataLoader-friendly).
- `RandomWindowBatches`: random training windows with exact, O(1) resume (`state_dict`).

Every item follows the model's convention: labels are aligned with input_ids (the model shifts them)
and label -100 or the pad id marks a position that is not scored.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

SHARD_FORMAT = "smallgpt-token-shards"
SHARD_VERSION = 1
SPLITS = ("train", "val")
IGNORE_INDEX = -100
_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


class TextDataset(Dataset):
    """Overlapping windows of `max_seq_len` tokens over `texts`, every `stride` tokens.

    The texts are tokenized and joined with the tokenizer's end-of-text token between them. The
    last window may be short; it is right-padded with `tokenizer.pad_token_id`. Items are dicts of
    LongTensors (max_seq_len,): `input_ids`, `attention_mask` (1 = real token, 0 = padding) and
    `labels` (input_ids, padding = pad id, which the model ignores when built with that
    pad_token_id). Raises TypeError for non-str texts, ValueError for bad sizes or no tokens.
    """

    def __init__(
        self, texts: Sequence[str], tokenizer: Any, max_seq_len: int = 1024, stride: int = 512
    ) -> None:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a sequence of str (wrap a single text in a list)")
        if max_seq_len < 2:
            raise ValueError(f"max_seq_len must be at least 2, got {max_seq_len}")
        if not 1 <= stride <= max_seq_len:
            raise ValueError(f"stride must be in [1, max_seq_len={max_seq_len}], got {stride}")
        if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs <|endoftext|> and <|pad|> special tokens")
        encoded = (
            tokenizer.encode_batch(list(texts))
            if hasattr(tokenizer, "encode_batch")
            else [tokenizer.encode(t) for t in texts]
        )
        eos = tokenizer.eos_token_id
        stream: list[int] = []
        for index, ids in enumerate(encoded):
            if index:
                stream.append(eos)
            stream.extend(ids)
        if not stream:
            raise ValueError("texts contain no tokens (all texts are empty)")
        self.tokens = torch.tensor(stream, dtype=torch.long)
        self.max_seq_len = max_seq_len
        self.stride = stride
        self.pad_token_id = tokenizer.pad_token_id

    def __len__(self) -> int:
        overflow = max(len(self.tokens) - self.max_seq_len, 0)
        return 1 + math.ceil(overflow / self.stride)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        start = (index % len(self)) * self.stride
        window = self.tokens[start : start + self.max_seq_len]
        real = len(window)
        input_ids = torch.full((self.max_seq_len,), self.pad_token_id, dtype=torch.long)
        input_ids[:real] = window
        attention_mask = torch.zeros(self.max_seq_len, dtype=torch.long)
        attention_mask[:real] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": input_ids.clone(),
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _token_byte_lengths(tokenizer: Any) -> np.ndarray:
    """Bytes of text each id stands for; special tokens stand for no text (0)."""
    specials = set(tokenizer.special_tokens.values())
    return np.array(
        [
            0 if i in specials else len(tokenizer.id_to_bytes(i))
            for i in range(tokenizer.vocab_size)
        ],
        dtype=np.int64,
    )


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
    byte_lengths = _token_byte_lengths(tokenizer)
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
        "tokenizer_sha256": _sha256(out / "tokenizer.json"),
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


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


class _ShardTokens:
    """A split's token file, memory-mapped on first use (so each DataLoader worker maps its own)."""

    def __init__(self, shard_dir: str | os.PathLike, split: str) -> None:
        self.meta = load_meta(shard_dir)
        info = self.meta["splits"][_check_split(split)]
        self.path = Path(shard_dir) / info["file"]
        self.num_tokens = info["tokens"]
        self.dtype = _DTYPES[self.meta["dtype"]]
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.num_tokens,))
        return self._array

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}


class TokenShardDataset(Dataset):
    """Sequential windows of `seq_len` tokens over a shard split, for evaluation.

    Window k starts at token k·stride (default stride = seq_len - 1, so windows overlap by one
    token). Each token of the split except the first is scored exactly once: labels of tokens
    already scored by the previous window (context only) are -100, as is padding of the last
    window. Items: dicts of LongTensors (seq_len,) `input_ids`, `attention_mask`, `labels`.
    Raises ValueError when the split has fewer than 2 tokens or stride is outside [1, seq_len-1].
    """

    def __init__(
        self, shard_dir: str | os.PathLike, split: str, seq_len: int, stride: int | None = None
    ) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        stride = seq_len - 1 if stride is None else stride
        if not 1 <= stride <= seq_len - 1:
            raise ValueError(f"stride must be in [1, seq_len-1={seq_len - 1}], got {stride}")
        self.tokens = _ShardTokens(shard_dir, split)
        if self.tokens.num_tokens < 2:
            raise ValueError(f"split '{split}' of {shard_dir} has fewer than 2 tokens")
        self.seq_len, self.stride = seq_len, stride
        pad = self.tokens.meta.get("pad_token_id")
        self.pad_token_id = self.tokens.meta["eos_token_id"] if pad is None else pad

    def __len__(self) -> int:
        overflow = max(self.tokens.num_tokens - self.seq_len, 0)
        return 1 + math.ceil(overflow / self.stride)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        start = index * self.stride
        end = min(start + self.seq_len, self.tokens.num_tokens)
        real = end - start
        input_ids = torch.full((self.seq_len,), self.pad_token_id, dtype=torch.long)
        input_ids[:real] = torch.from_numpy(self.tokens.array[start:end].astype(np.int64))
        labels = torch.full((self.seq_len,), IGNORE_INDEX, dtype=torch.long)
        first_new = 0 if index == 0 else (index - 1) * self.stride + self.seq_len - start
        labels[first_new:real] = input_ids[first_new:real]
        attention_mask = torch.zeros(self.seq_len, dtype=torch.long)
        attention_mask[:real] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class RandomWindowBatches:
    """Endless training batches of random contiguous windows from a shard split.

    Batch number `step` is drawn from numpy's PCG64 seeded with (seed, step): all ranks draw the
    same world_size·batch_size window starts and rank r takes its own batch_size of them. The
    state is therefore just `step`, and `load_state_dict` resumes exactly where a checkpoint was.
    `next_batch()` (or iteration) returns `(input_ids, labels)` LongTensors (batch_size, seq_len);
    labels equal input_ids (the model shifts them). Raises ValueError for bad sizes or ranks.
    """

    def __init__(
        self,
        shard_dir: str | os.PathLike,
        split: str = "train",
        *,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if seq_len < 2 or batch_size < 1:
            raise ValueError(f"need seq_len >= 2 and batch_size >= 1, got {seq_len}, {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.tokens = _ShardTokens(shard_dir, split)
        if self.tokens.num_tokens < seq_len:
            raise ValueError(
                f"split '{split}' of {shard_dir} has {self.tokens.num_tokens} tokens, fewer than "
                f"seq_len={seq_len}"
            )
        self.split, self.seq_len, self.batch_size = split, seq_len, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.step = 0

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """The next (input_ids, labels) batch of this rank."""
        rng = np.random.default_rng([self.seed, self.step])
        num_starts = self.tokens.num_tokens - self.seq_len + 1
        starts = rng.integers(0, num_starts, size=self.world_size * self.batch_size)
        mine = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        windows = self.tokens.array[mine[:, None] + np.arange(self.seq_len)]
        self.step += 1
        input_ids = torch.from_numpy(windows.astype(np.int64))
        return input_ids, input_ids.clone()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position in the batch stream."""
        return {
            "split": self.split,
            "seed": self.seed,
            "step": self.step,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "num_tokens": self.tokens.num_tokens,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`; raises ValueError when it describes a different stream."""
        for key, value in self.state_dict().items():
            if key == "step":
                continue
            if state.get(key) != value:
                raise ValueError(
                    f"data state has {key}={state.get(key)!r} but this batch source has {value!r}; "
                    "resume with the same shards, seed, seq_len, batch_size and world_size"
                )
        step = state.get("step")
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"data state has an invalid step {step!r}")
        self.step = step


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m smallgpt.data prepare --tokenizer tok.json --input FILE... --out DIR`."""
    parser = argparse.ArgumentParser(
        prog="python -m smallgpt.data", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="tokenize text files into train/val token shards")
    prepare.add_argument(
        "--tokenizer", required=True, help="tokenizer JSON from smallgpt.tokenizer"
    )
    prepare.add_argument("--input", required=True, nargs="+", help="text files (one document each)")
    prepare.add_argument("--out", required=True, help="output directory")
    prepare.add_argument("--val-fraction", type=float, default=0.01, help="default: 0.01")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    from smallgpt.tokenizer import Tokenizer

    meta = prepare_shards(
        Tokenizer.load(args.tokenizer),
        args.input,
        args.out,
        val_fraction=args.val_fraction,
        show_progress=not args.quiet,
    )
    for name in SPLITS:
        split = meta["splits"][name]
        print(
            f"{name}: {split['tokens']} tokens, {split['text_bytes']} bytes -> {args.out}/{split['file']}"
        )


if __name__ == "__main__":
    main()
