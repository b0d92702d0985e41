"""Documents grouped into chunks of about `chunk_chars` of text, read on a background thread.

Decompression and JSON/Parquet parsing run on the reader thread while the caller encodes the
previous chunk (the Rust encoder releases the GIL). At most `_QUEUED` chunks wait in the queue,
so memory holds the chunk being encoded, the queued ones and the one being filled: a bound of
(`_QUEUED` + 2) x `chunk_chars` of text whatever the corpus size. Chunk boundaries depend only
on the documents and the sizes, so a second read cuts the same chunks (which resuming needs).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from smallgpt import _bpe
from smallgpt.corpus.sources import (
    RECORD_BYTES,
    Cut,
    Piece,
    ReadStats,
    Records,
    Source,
    iter_pieces,
)

_QUEUED = 2


@dataclass
class Chunk:
    """Consecutive pieces of text files and blocks of records (`iter_pieces`), and the
    reader's counters when the chunk was closed."""

    index: int
    pieces: list[Piece | Records] = field(default_factory=list)
    text_chars: int = 0
    bytes_done: int = 0
    documents: int = 0
    skipped: int = 0

    def texts(self) -> list[str | _bpe.TextBatch]:
        """What the encoder takes (`Tokenizer.encode_batch_to_numpy`): each piece's text, each
        block of records' batch (which stands for its texts)."""
        return [p.text if isinstance(p, Piece) else p.batch for p in self.pieces]


def _chunks(
    sources: Sequence[Source],
    chunk_chars: int,
    piece_chars: int,
    cut: Cut | None,
    text_field: str,
    skip_bad_records: bool,
    record_bytes: int,
) -> Iterator[Chunk]:
    stats = ReadStats()
    chunk = Chunk(0)
    for piece in iter_pieces(
        sources,
        text_field=text_field,
        skip_bad_records=skip_bad_records,
        piece_chars=piece_chars,
        cut=cut,
        stats=stats,
        record_bytes=record_bytes,
    ):
        chunk.pieces.append(piece)
        is_text = isinstance(piece, Piece)
        chunk.text_chars += len(piece.text) if is_text else piece.batch.chars
        # A document of several pieces ends its chunk: then no chunk boundary falls between
        # the end of such a document and the moment its tokens are split (see data.shards).
        if chunk.text_chars >= chunk_chars or (is_text and piece.last and not piece.first):
            chunk.bytes_done, chunk.documents, chunk.skipped = (
                stats.bytes_done,
                stats.documents,
                stats.skipped,
            )
            yield chunk
            chunk = Chunk(chunk.index + 1)
    chunk.bytes_done, chunk.documents, chunk.skipped = (
        stats.bytes_done,
        stats.documents,
        stats.skipped,
    )
    if chunk.pieces:
        yield chunk


_END = object()


def read_chunks(
    sources: Sequence[Source],
    *,
    chunk_chars: int = 8 << 20,
    piece_chars: int = 1 << 20,
    cut: Cut | None = None,
    text_field: str = "text",
    skip_bad_records: bool = False,
    record_bytes: int = RECORD_BYTES,
) -> Iterator[Chunk]:
    """The pieces and records of `sources` (see `iter_pieces`) in chunks of about `chunk_chars`
    characters.

    The reading runs on a daemon thread; an error there is raised here, at the chunk where it
    happened. Closing the iterator early stops the thread.
    """
    slots: queue.Queue = queue.Queue(maxsize=_QUEUED)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in _chunks(
                sources, chunk_chars, piece_chars, cut, text_field, skip_bad_records, record_bytes
            ):
                while not stop.is_set():
                    try:
                        slots.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_END)
        except Exception as exc:  # noqa: BLE001 (handed to the consumer, which raises it)
            slots.put(exc)

    thread = threading.Thread(target=produce, name="smallgpt-corpus-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                slots.get(timeout=0.1)
            except queue.Empty:
                continue
