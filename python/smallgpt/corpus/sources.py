"""Where documents come from: text, JSONL and Parquet files (plain or compressed), directories,
glob patterns and Hugging Face datasets, each read as a stream of documents.

A `.txt` file is one document. A `.jsonl`/`.ndjson` line and a `.parquet` row is one document:
its `text_field` (default "text"); JSON lines are parsed in Rust (`_bpe.parse_jsonl`, without
the GIL) as Python's `json` reads them, NaN and Infinity included, and their texts stay in
Rust (`_bpe.TextBatch`) until they are encoded. `.gz`, `.zst` and `.bz2` after any of these
decompress by extension. Directories are searched recursively and, like glob patterns, give
their files in sorted order, so a corpus always reads the same way. `hf:NAME[:SPLIT]` reads a `datasets`
dataset (a Hub name or a folder written by `save_to_disk`; split default "train").
Documents are separated downstream by `<|endoftext|>`; nothing is added or removed here.
"""

from __future__ import annotations

import bz2
import codecs
import glob
import gzip
import io
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from smallgpt import _bpe

FORMATS = {".txt": "text", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".zst", ".bz2")
HF_PREFIX = "hf:"
_BLOCK = 1 << 20  # bytes read from a text file at a time
_ROW_BATCH = 1024  # rows of a Parquet file or dataset read at a time
RECORD_BYTES = 1 << 20  # bytes of JSON lines parsed (and held as one TextBatch) at a time


def accepted_extensions() -> list[str]:
    """Every file ending read as a corpus, e.g. ".jsonl", ".jsonl.zst"."""
    return [f + c for f in FORMATS for c in ("", *COMPRESSIONS)]


class CorpusError(ValueError):
    """A corpus input that cannot be read; the message names the file and the place."""


@dataclass(frozen=True)
class Source:
    """One input: a file (`path`, its `format` and `compression`) or a `datasets` dataset."""

    name: str
    format: str
    path: Path | None = None
    compression: str | None = None

    @property
    def single_document(self) -> bool:
        """True for a text file, which is one document; False for files of records."""
        return self.format == "text"

    def fingerprint(self) -> dict[str, Any]:
        """What this input is made of: path, size and mtime (a dataset: its fingerprint)."""
        if self.path is None:
            return {"name": self.name, "fingerprint": _hf_fingerprint(self.name)}
        stat = self.path.stat()
        return {
            "path": str(self.path.resolve()),
            "bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }

    def size(self) -> int:
        """Bytes on disk (0 for a dataset)."""
        return 0 if self.path is None else self.path.stat().st_size


def _file_source(path: Path) -> Source:
    name = path.name.lower()
    compression = next((c for c in COMPRESSIONS if name.endswith(c)), None)
    stem = name[: -len(compression)] if compression else name
    fmt = next((f for ext, f in FORMATS.items() if stem.endswith(ext)), None)
    if fmt is None:
        raise CorpusError(
            f"{path}: unknown file type; accepted: {', '.join(accepted_extensions())}"
        )
    return Source(str(path), fmt, path, compression)


def _is_corpus_file(path: Path) -> bool:
    try:
        _file_source(path)
    except CorpusError:
        return False
    return True


def resolve_sources(inputs: Sequence[str | os.PathLike | Source]) -> list[Source]:
    """Expand `inputs` (files, directories, glob patterns, `hf:NAME[:SPLIT]`) into sources
    (a `Source` stays as it is).

    A directory gives every file under it with an accepted extension, in sorted order; a
    pattern with `*`, `?` or `[` gives its sorted matches (`**` recurses). Raises
    FileNotFoundError for a missing file or a pattern or directory without corpus files,
    CorpusError for an unknown extension (listing the accepted ones), ValueError for no inputs.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    sources: list[Source] = []
    for item in inputs:
        if isinstance(item, Source):
            sources.append(item)
            continue
        text = os.fspath(item)
        if text.startswith(HF_PREFIX):
            sources.append(Source(text, "hf"))
        elif Path(text).is_dir():
            found = sorted(p for p in Path(text).rglob("*") if p.is_file() and _is_corpus_file(p))
            if not found:
                raise FileNotFoundError(
                    f"{text}: no corpus files in this directory "
                    f"(accepted: {', '.join(accepted_extensions())})"
                )
            sources += [_file_source(p) for p in found]
        elif any(c in text for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not found:
                raise FileNotFoundError(f"{text}: the pattern matches no file")
            sources += [_file_source(p) for p in found]
        elif not Path(text).is_file():
            raise FileNotFoundError(f"input file not found: {text}")
        else:
            sources.append(_file_source(Path(text)))
    if not sources:
        raise ValueError(
            "no corpus inputs given: pass at least one file, directory, pattern or hf:NAME"
        )
    return sources


class _Prefetch(io.RawIOBase):
    """`stream` read ahead in blocks on a thread of its own, at most `_AHEAD` blocks ahead:
    decompression (zlib, bz2 and zstd release the GIL) then overlaps the parsing."""

    _AHEAD = 4

    def __init__(self, stream: IO[bytes], name: str) -> None:
        super().__init__()
        self._stream = stream
        self._blocks: queue.Queue = queue.Queue(maxsize=self._AHEAD)
        self._rest = b""
        self._stop = threading.Event()
        self._name = name
        self._thread = threading.Thread(
            target=self._fill, name=f"smallgpt-read {name}", daemon=True
        )
        self._thread.start()

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._blocks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                block = self._stream.read(_BLOCK)
                self._put(block)
                if not block:
                    return
        except Exception as exc:  # noqa: BLE001 (raised by the reader, see readinto)
            self._put(exc)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._rest:
            item = self._blocks.get()
            if isinstance(item, Exception):
                raise CorpusError(f"{self._name}: cannot decompress ({item})") from item
            if not item:
                self._blocks.put(item)  # the end stays the end for later reads
                return 0
            self._rest = item
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._blocks.get(timeout=0.1)
            except queue.Empty:
                continue
        self._stream.close()
        super().close()


def _decompressed(source: Source, raw: IO[bytes]) -> IO[bytes]:
    if source.compression == ".gz":
        try:
            from isal import igzip  # optional: the "data" extra; inflates ~3x faster than zlib
        except ImportError:
            return gzip.GzipFile(fileobj=raw)
        return igzip.IGzipFile(fileobj=raw)
    if source.compression == ".bz2":
        return bz2.BZ2File(raw)
    try:
        import zstandard  # optional: the "data" extra
    except ImportError as exc:
        raise ImportError(
            f"{source.name}: reading .zst needs zstandard: pip install 'smallgpt[data]'"
        ) from exc
    return zstandard.ZstdDecompressor().stream_reader(raw)


def _open_raw(source: Source) -> tuple[IO[bytes], IO[bytes]]:
    """(the file on disk, its decompressed byte stream, read ahead on a thread)."""
    assert source.path is not None
    raw = source.path.open("rb")
    if source.compression is None:
        return raw, raw
    try:
        stream = _decompressed(source, raw)
    except ImportError:
        raw.close()
        raise
    return raw, io.BufferedReader(_Prefetch(stream, source.name), buffer_size=_BLOCK)


@dataclass
class ReadStats:
    """Counters a reader updates as it goes: raw bytes read, documents and skipped records."""

    bytes_done: int = 0
    documents: int = 0
    skipped: int = 0


Cut = Callable[[str], int]


def pretoken_cut(pattern: str) -> Cut:
    """The `Cut` of the pre-tokenizer pattern named `pattern` ("gpt2", "cl100k"): cutting a
    text there and encoding the parts gives the ids of the whole."""
    return lambda text: _bpe.safe_cut(text, pattern)


def _cut_near(text: str, size: int, cut: Cut) -> int:
    """The last safe cut within the first `size` characters of `text`, looking further (twice
    as far each time) when there is none; 0 when `text` has none at all."""
    while True:
        at = cut(text[:size])
        if at > 0 or size >= len(text):
            return at
        size *= 2


def _text_pieces(
    source: Source, piece_chars: int, cut: Cut, stats: ReadStats
) -> Iterator[tuple[str, bool]]:
    """(piece, is_last) of a text file's one document, each piece ending where `cut` allows."""
    base = stats.bytes_done
    raw, stream = _open_raw(source)
    with raw, stream:
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        carry, offset = "", 0
        while True:
            block = stream.read(_BLOCK)
            held = len(decoder.getstate()[0])
            try:
                carry += decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                where = offset - held + exc.start
                raise CorpusError(
                    f"{source.name}: not UTF-8 (invalid byte at offset {where})"
                ) from None
            offset += len(block)
            stats.bytes_done = base + raw.tell()
            while len(carry) >= piece_chars:
                at = _cut_near(carry, piece_chars, cut)
                if at <= 0:
                    break  # no safe cut yet: read on (as the Rust file encoder does)
                yield carry[:at], False
                carry = carry[at:]
            if not block:
                yield carry, True
                return


def _bad_line(source: Source, number: int, offset: int, kind: str, detail: Any, field: str) -> str:
    """The message for a JSONL line that holds no text (see `_bpe.parse_jsonl`'s kinds)."""
    where = f"{source.name}:line {number}"
    if kind == "utf8":
        return f"{where}: not UTF-8 (invalid byte at offset {offset + detail})"
    if kind == "json":
        return f"{where}: not JSON ({detail}); --skip-bad-records skips such lines"
    if kind == "missing":
        problem = f"no {field!r} field (it has {detail})"
    else:
        problem = f"field {field!r} is {detail}, not a string"
    return f"{where}: {problem}; --skip-bad-records skips such records"


def _block_records(
    source: Source,
    block: bytes,
    line: int,
    offset: int,
    text_field: str,
    skip_bad: bool,
    stats: ReadStats,
) -> _bpe.TextBatch:
    """The texts of `block` (whole lines, the first one line `line` at byte `offset` of the
    decompressed file), parsed in Rust without the GIL; the first bad line is raised, or with
    `skip_bad` every bad line is counted."""
    # One thread: the reader's own, so parsing never waits behind the encoder's threads.
    texts, bad = _bpe.parse_jsonl(block, text_field, 1)
    for _, index, kind, detail in bad:
        if not skip_bad or kind == "utf8":
            raise CorpusError(_bad_line(source, line + index, offset, kind, detail, text_field))
    stats.skipped += len(bad)
    return texts


def _jsonl_batches(
    source: Source, text_field: str, skip_bad: bool, stats: ReadStats, record_bytes: int
) -> Iterator[_bpe.TextBatch]:
    base = stats.bytes_done
    raw, stream = _open_raw(source)
    with raw, stream:
        line, offset, rest = 1, 0, b""
        while True:
            data = stream.read(record_bytes)
            block, rest = rest + data, b""
            if data:  # whole lines only: the rest waits for the next block
                end = block.rfind(b"\n") + 1
                block, rest = block[:end], block[end:]
            if block:
                yield _block_records(source, block, line, offset, text_field, skip_bad, stats)
                line += block.count(b"\n")
                offset += len(block)
            stats.bytes_done = base + raw.tell()
            if not data:
                return


def _checked_rows(
    source: Source, texts: list, first_row: int, text_field: str, skip_bad: bool, stats: ReadStats
) -> _bpe.TextBatch:
    """The batch of `texts` (rows numbered from `first_row` + 1); a row that holds no string is
    raised, or with `skip_bad` skipped and counted."""
    if all(isinstance(text, str) for text in texts):
        return _bpe.TextBatch(texts)
    kept = []
    for row, text in enumerate(texts, first_row + 1):
        if isinstance(text, str):
            kept.append(text)
        elif skip_bad:
            stats.skipped += 1
        else:
            what = "null" if text is None else f"{type(text).__name__}, not a string"
            raise CorpusError(
                f"{source.name}:row {row}: column {text_field!r} is {what}; "
                "--skip-bad-records skips such rows"
            )
    return _bpe.TextBatch(kept)


def _parquet_batches(
    source: Source, text_field: str, skip_bad: bool, stats: ReadStats, _: int
) -> Iterator[_bpe.TextBatch]:
    try:
        import pyarrow as pa  # optional: the "data" extra
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            f"{source.name}: reading Parquet needs pyarrow: pip install 'smallgpt[data]'"
        ) from exc
    base, size = stats.bytes_done, source.size()
    raw, stream = _open_raw(source)
    with raw, stream, tempfile.TemporaryFile() as spill:
        if source.compression:
            # Parquet needs to seek: a compressed file is spilled to disk, not held in memory.
            while block := stream.read(_BLOCK):
                spill.write(block)
            spill.seek(0)
        try:
            parquet = pq.ParquetFile(spill if source.compression else raw)
        except pa.ArrowException as exc:
            raise CorpusError(f"{source.name}: not a Parquet file ({exc})") from None
        names = parquet.schema_arrow.names
        if text_field not in names:
            raise CorpusError(f"{source.name}: no column {text_field!r} (columns: {names})")
        kind = parquet.schema_arrow.field(text_field).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise CorpusError(f"{source.name}: column {text_field!r} holds {kind}, not strings")
        row, rows = 0, max(parquet.metadata.num_rows, 1)
        # Batches of rows, not whole row groups, are read: memory stays bounded by pyarrow's
        # buffers, however large the row groups.
        for batch in parquet.iter_batches(batch_size=_ROW_BATCH, columns=[text_field]):
            stats.bytes_done = base + size * row // rows
            texts = batch.column(0).to_pylist()
            yield _checked_rows(source, texts, row, text_field, skip_bad, stats)
            row += len(texts)


def _load_hf(name: str) -> Any:
    try:
        import datasets  # optional: the "hf-datasets" extra
    except ImportError as exc:
        raise ImportError(
            f"{name}: reading a Hugging Face dataset needs `datasets`: "
            "pip install 'smallgpt[hf-datasets]'"
        ) from exc
    spec = name[len(HF_PREFIX) :]
    dataset_name, _, split = spec.rpartition(":") if spec.count(":") else (spec, "", "")
    split = split or "train"
    if Path(dataset_name).is_dir():
        loaded = datasets.load_from_disk(dataset_name)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise CorpusError(f"{name}: no split {split!r} (splits: {sorted(loaded)})")
            loaded = loaded[split]
        return loaded
    return datasets.load_dataset(dataset_name, split=split)


def _hf_fingerprint(name: str) -> str | None:
    return getattr(_load_hf(name), "_fingerprint", None)


def _hf_batches(
    source: Source, text_field: str, skip_bad: bool, stats: ReadStats, _: int
) -> Iterator[_bpe.TextBatch]:
    dataset = _load_hf(source.name)
    if text_field not in dataset.column_names:
        raise CorpusError(
            f"{source.name}: no column {text_field!r} (columns: {dataset.column_names})"
        )
    row = 0
    for batch in dataset.select_columns([text_field]).iter(batch_size=_ROW_BATCH):
        texts = batch[text_field]
        yield _checked_rows(source, texts, row, text_field, skip_bad, stats)
        row += len(texts)


_READERS = {"jsonl": _jsonl_batches, "parquet": _parquet_batches, "hf": _hf_batches}


@dataclass(frozen=True)
class Piece:
    """Text of a text file's one document, from source number `source`; `first` and `last`
    say whether the document starts and ends with this piece."""

    text: str
    source: int
    first: bool
    last: bool


@dataclass(frozen=True)
class Records:
    """Consecutive records of source number `source`, each one document: their texts in
    `batch`, the first being the source's document number `first_document` (from 0)."""

    batch: _bpe.TextBatch
    source: int
    first_document: int


def iter_pieces(
    sources: Sequence[Source],
    *,
    text_field: str = "text",
    skip_bad_records: bool = False,
    piece_chars: int = 1 << 20,
    cut: Cut | None = None,
    stats: ReadStats | None = None,
    record_bytes: int = RECORD_BYTES,
) -> Iterator[Piece | Records]:
    """Every document of `sources`, in order: text files as `Piece`s, records as `Records`.

    Records come in blocks: the JSONL lines of about `record_bytes` bytes, Parquet and dataset
    rows 1024 at a time. A text
    file is cut into pieces of about `piece_chars` characters at `cut(text)` (the character
    index of the last place where the text may be split without changing its encoding; 0: none
    yet, see `pretoken_cut`); without `cut` a text file is one piece. `stats` is updated as sources are read. Raises
    CorpusError naming the file and the line, row or byte offset of bad input; with
    `skip_bad_records`, records that are not JSON, lack the field or hold no string are
    skipped and counted in `stats.skipped` instead.
    """
    stats = ReadStats() if stats is None else stats
    done = 0
    for index, source in enumerate(sources):
        if source.single_document:
            parts = _text_pieces(
                source, piece_chars if cut else 1 << 62, cut or (lambda _: 0), stats
            )
            first = True
            for text, last in parts:
                stats.documents += last
                yield Piece(text, index, first, last)
                first = False
        else:
            number = 0
            reader = _READERS[source.format]
            for batch in reader(source, text_field, skip_bad_records, stats, record_bytes):
                if len(batch):
                    stats.documents += len(batch)
                    yield Records(batch, index, number)
                    number += len(batch)
        done += source.size()
        stats.bytes_done = done


def iter_documents(
    inputs: Sequence[str | os.PathLike | Source],
    *,
    text_field: str = "text",
    skip_bad_records: bool = False,
) -> Iterator[str]:
    """The text of every document of `inputs` (files, directories, patterns, `hf:`), in order.

    A text file is read whole; see `iter_pieces` for streaming it. Raises like
    `resolve_sources` and `iter_pieces`.
    """
    sources = resolve_sources(inputs)
    for item in iter_pieces(sources, text_field=text_field, skip_bad_records=skip_bad_records):
        if isinstance(item, Piece):
            yield item.text
        else:
            yield from item.batch.texts()
