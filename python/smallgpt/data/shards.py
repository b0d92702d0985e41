"""Token shards on disk: `train.bin`/`val.bin` of token ids and `meta.json`, written from a
corpus in bounded memory, resumably."""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from smallgpt.checkpoint.store import sha256_file
from smallgpt.corpus.chunks import Chunk, read_chunks
from smallgpt.corpus.sources import (
    RECORD_BYTES,
    Piece,
    Records,
    Source,
    pretoken_cut,
    resolve_sources,
)
from smallgpt.data.prepare_state import (
    PENDING_FILE,
    SPLITS,
    STATE_FILE,
    STATE_VERSION,
    empty_state,
    why_not_resume,
)

SHARD_FORMAT = "smallgpt-token-shards"
SHARD_VERSION = 1
_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


_COPY_CHUNK = 1 << 22  # tokens per copy step: bounds memory whatever the document size
_CHUNK_CHARS = 8 << 20  # text characters per chunk: the unit of work and of resuming
_PIECE_CHARS = 1 << 20  # a text file's document is encoded in pieces of about this size
_RECORD_BYTES = RECORD_BYTES  # JSON lines are read in blocks of this many bytes
_MASK64 = (1 << 64) - 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64s (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def held_out(seed: int, source: int, documents: np.ndarray, val_fraction: float) -> np.ndarray:
    """Which documents (numbers within source `source`) go to the validation split.

    Document d is held out when a 64-bit hash of (seed, source, d) falls in the lowest
    `val_fraction` of its range: a seeded random sample of about val_fraction of the documents
    that depends on nothing else (not on chunking, order of reading or resuming).
    """
    key = (seed * 0x9E3779B97F4A7C15 + source * 0xD1B54A32D192ED03) & _MASK64
    mixed = _mix64(np.asarray(documents, dtype=np.uint64) + np.uint64(key))
    return (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53 < val_fraction


class _TokenFile:
    """A `.partial` token file open for appending; counts its tokens, text bytes and documents.

    A chunk's documents are queued (`add`) and written with one concatenation (`flush`)."""

    def __init__(
        self, path: Path, dtype: np.dtype, byte_lengths: np.ndarray, eos: int, state: dict
    ) -> None:
        self.path, self.dtype, self.byte_lengths = path, dtype, byte_lengths
        self.eos = np.array([eos], dtype=dtype)
        self.state = state
        self.file = path.open("r+b")
        self.file.truncate(state["tokens"] * dtype.itemsize)
        self.file.seek(0, os.SEEK_END)
        self.buffer: list[np.ndarray] = []

    def _text_bytes(self, ids: np.ndarray) -> int:
        return int(self.byte_lengths[ids].sum())  # (special tokens such as eos count none)

    def add(self, ids: np.ndarray) -> None:
        """Queue a document's ids and the `eos` that ends it."""
        self.add_documents(np.concatenate((ids, self.eos)), 1, self._text_bytes(ids))

    def add_documents(self, ids: np.ndarray, documents: int, text_bytes: int) -> None:
        """Queue the ids of `documents` documents of `text_bytes` bytes of text together, each
        already followed by its `eos`."""
        self.buffer.append(ids)
        self.state["documents"] += documents
        self.state["text_bytes"] += text_bytes

    def flush(self) -> None:
        """Write the queued ids."""
        if self.buffer:
            self._write(np.concatenate(self.buffer))
            self.buffer = []

    def _write(self, ids: np.ndarray) -> None:
        ids.tofile(self.file)
        self.state["tokens"] += len(ids)

    def copy_from(self, tokens: np.ndarray, lo: int, hi: int) -> None:
        """Append the document tokens[lo:hi] and eos in bounded steps (nothing when lo == hi)."""
        self.flush()
        for start in range(lo, hi, _COPY_CHUNK):
            step = np.array(tokens[start : min(start + _COPY_CHUNK, hi)])
            self._write(step)
            self.state["text_bytes"] += self._text_bytes(step)
        if hi > lo:
            self.add(tokens[:0])
            self.flush()

    def hand_over(self) -> None:
        """Write the queued ids through to the operating system (`os.fsync` makes them durable)."""
        self.flush()
        self.file.flush()


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _start_state(
    out: Path, header: dict, sources: list[Source], itemsize: int, log: Callable[[str], None]
) -> dict:
    """The saved state to continue from, or a fresh one (with empty partial files)."""
    path = out / STATE_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            saved = None
        why = why_not_resume(saved, header, out, itemsize)
        if why is None:
            state = saved["state"]
            log(f"resuming the preparation in {out} after chunk {state['chunks_done']}")
            return state
        log(f"starting the preparation in {out} over: {why}")
    for name in (*(f"{n}.bin.partial" for n in SPLITS), PENDING_FILE):
        (out / name).write_bytes(b"")
    state = empty_state(sources)
    _write_json_atomic(path, {**header, "state": state})
    return state


class _Preparation:
    """Encodes chunks onto the partial token files and commits the state after each."""

    def __init__(
        self,
        tokenizer: Any,
        sources: list[Source],
        out: Path,
        header: dict,
        state: dict,
        val_fraction: float,
        seed: int,
    ) -> None:
        self.tokenizer, self.sources, self.out, self.header = tokenizer, sources, out, header
        self.state, self.val_fraction, self.seed = state, val_fraction, seed
        self.dtype = tokenizer.token_dtype
        self.eos = tokenizer.eos_token_id
        byte_lengths = tokenizer.token_byte_lengths()
        self.splits = {
            name: _TokenFile(
                out / f"{name}.bin.partial",
                self.dtype,
                byte_lengths,
                self.eos,
                state["splits"][name],
            )
            for name in SPLITS
        }
        self.pending = (out / PENDING_FILE).open("r+b")
        self.pending.truncate(state["pending_tokens"] * self.dtype.itemsize)
        self.pending.seek(0, os.SEEK_END)
        self.committer = ThreadPoolExecutor(1, thread_name_prefix="smallgpt-commit")
        self.committing: tuple[Future, dict] | None = None  # the last commit and its state

    def _split_whole(self, ids: np.ndarray) -> None:
        """A text file's document: its last val_fraction of tokens (rounded up) go to val."""
        cut = len(ids) - math.ceil(len(ids) * self.val_fraction)
        if cut:
            self.splits["train"].add(ids[:cut])
        if cut < len(ids):
            self.splits["val"].add(ids[cut:])

    def _split_pending(self) -> None:
        """The same for a document gathered in the pending file, copied in bounded steps."""
        self.pending.flush()
        total = self.state["pending_tokens"]
        if total:
            tokens = np.memmap(self.pending.name, dtype=self.dtype, mode="r", shape=(total,))
            cut = total - math.ceil(total * self.val_fraction)
            self.splits["train"].copy_from(tokens, 0, cut)
            self.splits["val"].copy_from(tokens, cut, total)
            del tokens
        self.state["pending_tokens"] = 0

    def _place_records(self, records: Records, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """A block of records (`lengths` ids each, one after the other in `tokens`) to their
        splits, each non-empty one followed by eos."""
        first = records.first_document
        numbers = np.arange(first, first + len(lengths), dtype=np.uint64)
        to_val = held_out(self.seed, records.source, numbers, self.val_fraction)
        text_bytes = records.batch.byte_lengths()  # the bytes of each record's ids
        for name, mask in (("train", ~to_val), ("val", to_val)):
            keep = mask & (lengths > 0)
            if keep.all():
                kept = tokens
            elif keep.any():
                kept = tokens[np.repeat(keep, lengths)]
            else:
                continue
            ends = np.cumsum(lengths[keep])
            self.splits[name].add_documents(
                np.insert(kept, ends, self.eos), int(keep.sum()), int(text_bytes[keep].sum())
            )

    def _place_text(self, piece: Piece, ids: np.ndarray) -> None:
        """A piece of a text file's one document: split whole, or gathered until its end."""
        if piece.first and piece.last:
            self._split_whole(ids)
            return
        ids.tofile(self.pending)
        self.state["pending_tokens"] += len(ids)
        if piece.last:
            self._split_pending()

    def encode(self, chunk: Chunk) -> None:
        """Encode every piece and record of `chunk` in one call to the encoder (all cores, one
        array of ids), place them in order, then commit."""
        ids, offsets = self.tokenizer.encode_batch_to_numpy(chunk.texts())
        self.wait_for_commit()  # encoded while the last chunk's commit ran; it must end first
        at = 0  # the document (an offset's index) the next piece or block starts at
        for piece in chunk.pieces:
            counts = self.state["sources"][piece.source]
            if isinstance(piece, Piece):
                self._place_text(piece, ids[offsets[at] : offsets[at + 1]])
                counts["tokens"] += int(offsets[at + 1] - offsets[at])
                counts["documents"] += piece.last
                at += 1
            else:
                count = len(piece.batch)
                bounds = offsets[at : at + count + 1]
                self._place_records(piece, ids[bounds[0] : bounds[-1]], np.diff(bounds))
                counts["tokens"] += int(bounds[-1] - bounds[0])
                counts["documents"] += count
                at += count
        self.state["chunks_done"] = chunk.index + 1
        self.state["skipped_records"] = chunk.skipped
        self.commit()

    def commit(self) -> None:
        """Hand this chunk's ids to the operating system, then make them durable and save the
        state that describes them on the commit thread: the next chunk is encoded meanwhile and
        placed once this commit is done (`wait_for_commit`)."""
        for split in self.splits.values():
            split.hand_over()
        self.pending.flush()
        state = copy.deepcopy(self.state)  # what this chunk's commit saves
        self.committing = (self.committer.submit(self._make_durable, state), state)

    def _make_durable(self, state: dict) -> None:
        for file in (*(split.file for split in self.splits.values()), self.pending):
            os.fsync(file.fileno())
        _write_json_atomic(self.out / STATE_FILE, {**self.header, "state": state})

    def wait_for_commit(self) -> None:
        """Wait until the last chunk's state is durable (raising what its commit raised); then a
        pending file that state says is empty is emptied."""
        if self.committing is None:
            return
        (committing, state), self.committing = self.committing, None
        committing.result()
        if state["pending_tokens"] == 0 and self.pending.tell():
            self.pending.truncate(0)
            self.pending.seek(0)

    def close(self) -> None:
        """Finish the last commit, then close the files."""
        try:
            self.wait_for_commit()
        finally:
            self.committer.shutdown()
            for split in self.splits.values():
                split.file.close()
            self.pending.close()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def prepare_shards(
    tokenizer: Any,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    val_fraction: float = 0.01,
    split_seed: int = 0,
    text_field: str = "text",
    skip_bad_records: bool = False,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Tokenize a corpus into `out_dir/{train,val}.bin`, `meta.json` and `tokenizer.json`.

    `inputs` are what smallgpt.corpus reads: text, JSONL and Parquet files (plain, .gz, .zst or
    .bz2), directories and glob patterns (sorted), `hf:NAME[:SPLIT]`. Each document is followed
    by `<|endoftext|>` in each split it feeds; an empty document adds nothing. Validation split:
    a text file is one document, and the last `val_fraction` of its tokens (rounded up) go to
    val; the documents of a file of records (JSONL, Parquet, dataset rows) go whole, a seeded
    (`split_seed`) random ~val_fraction of them to val (`held_out`). Token files are raw
    uint16 (vocab <= 65536) or uint32 arrays for np.memmap; meta.json records the format
    version, the tokenizer's sha256, dtype, vocab size, tokens, text bytes and documents per
    split (for bits per byte), skipped records and the sources.

    Memory is bounded: text is read in chunks of about 8 MB on a background thread (a few
    chunks at a time, see smallgpt.corpus.chunks) and encoded on all cores. After each chunk
    the token files and a state file (`prepare_state.json`: inputs with sizes and mtimes, the
    tokenizer's hash, the options, the chunk reached) are made durable, so a killed run
    called again with the same arguments continues from the last completed chunk and writes
    the same bytes; with changed inputs it starts over and `log` (default: stderr) says why.
    The `.bin` files and meta.json appear only when everything is written. show_progress gives
    a tqdm bar in bytes read with the count of documents.

    Returns the meta dict. Raises FileNotFoundError for a missing input, ValueError for no
    inputs or val_fraction outside [0, 1), smallgpt.corpus.CorpusError (a ValueError) for
    bad input, naming the file and the line, row or byte offset.
    """
    sources = resolve_sources(inputs)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no <|endoftext|> token to separate documents")
    log = _stderr if log is None else log
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # stale until this run's shards are complete
    tokenizer.save(out / "tokenizer.json")
    options = {
        "val_fraction": val_fraction,
        "split_seed": split_seed,
        "text_field": text_field,
        "skip_bad_records": skip_bad_records,
        "chunk_chars": _CHUNK_CHARS,
        "piece_chars": _PIECE_CHARS,
        "record_bytes": _RECORD_BYTES,
    }
    header = {
        "version": STATE_VERSION,
        "inputs": [s.fingerprint() for s in sources],
        "tokenizer_sha256": sha256_file(out / "tokenizer.json"),
        "options": options,
    }
    itemsize = tokenizer.token_dtype.itemsize
    state = _start_state(out, header, sources, itemsize, log)
    if not state.get("finished"):
        work = _Preparation(tokenizer, sources, out, header, state, val_fraction, split_seed)
        try:
            _encode_all(work, text_field, skip_bad_records, show_progress)
        finally:
            work.close()
        # All tokens are written: a run killed while renaming the files finishes them.
        state["finished"] = True
        _write_json_atomic(out / STATE_FILE, {**header, "state": state})
    return _finish(tokenizer, sources, out, header, state, val_fraction, log)


def _encode_all(
    work: _Preparation, text_field: str, skip_bad_records: bool, show_progress: bool
) -> None:
    """Read the corpus in chunks and encode those after the last completed one."""
    chunks = read_chunks(  # closed below even when encoding fails: that stops its thread
        work.sources,
        chunk_chars=_CHUNK_CHARS,
        piece_chars=_PIECE_CHARS,
        cut=pretoken_cut(work.tokenizer.pattern_name),
        text_field=text_field,
        skip_bad_records=skip_bad_records,
        record_bytes=_RECORD_BYTES,
    )
    total = sum(s.size() for s in work.sources) or None
    with (
        closing(chunks),
        tqdm(
            total=total, unit="B", unit_scale=True, desc="prepare", disable=not show_progress
        ) as bar,
    ):
        for chunk in chunks:
            if chunk.index >= work.state["chunks_done"]:
                work.encode(chunk)
            bar.update(chunk.bytes_done - bar.n)
            bar.set_postfix(documents=chunk.documents, refresh=False)
        bar.update((total or bar.n) - bar.n)  # the last chunk closes before its file ends


def _finish(
    tokenizer: Any,
    sources: list[Source],
    out: Path,
    header: dict,
    state: dict,
    val_fraction: float,
    log: Callable[[str], None],
) -> dict:
    """Rename the partial files into place and write meta.json last."""
    splits = {}
    for name in SPLITS:
        partial = out / f"{name}.bin.partial"
        if partial.exists():  # (a resumed run may find it renamed already)
            os.replace(partial, out / f"{name}.bin")
        splits[name] = {"file": f"{name}.bin", **state["splits"][name]}
    if val_fraction > 0 and splits["val"]["tokens"] == 0:
        log(f"val_fraction={val_fraction} held out no document: the validation split is empty")
    meta = {
        "format": SHARD_FORMAT,
        "version": SHARD_VERSION,
        "dtype": tokenizer.token_dtype.name,
        "vocab_size": tokenizer.vocab_size,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tokenizer_file": "tokenizer.json",
        "tokenizer_sha256": header["tokenizer_sha256"],
        "val_fraction": val_fraction,
        "split_seed": header["options"]["split_seed"],
        "val_split": (
            "last val_fraction of each text file's tokens; whole documents (seeded) of files "
            "of records"
        ),
        "splits": splits,
        "skipped_records": state["skipped_records"],
        "sources": [
            {
                "path": str(s.path.resolve()) if s.path else s.name,
                "format": s.format,
                "bytes": s.size(),
                **counts,
            }
            for s, counts in zip(sources, state["sources"], strict=True)
        ],
    }
    _write_json_atomic(out / "meta.json", meta)
    (out / STATE_FILE).unlink(missing_ok=True)
    (out / PENDING_FILE).unlink(missing_ok=True)
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
