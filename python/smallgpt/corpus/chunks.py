"""Documents grouped into chunks of about `chunk_bytes` of text, read on a background thread.

Decompression and JSON/Parquet parsing run on the reader thread while the caller encodes the
previous chunk (the Rust encoder releases the GIL). At most `_QUEUED` chunks wait in the queue,
so memory holds the chunk being encoded, the queued ones and the one being filled: a bound of
(`_QUEUED` + 2) x `chunk_bytes` of text whatever the corpus size. Chunk boundaries depend only
on the documents and the sizes, so a second read cuts the same chunks (which resuming needs).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from smallgpt.corpus.sources import Cut, Piece, ReadStats, Source, iter_pieces

_QUEUED = 2


@dataclass
class Chunk:
    """Consecutive pieces, and the reader's counters when the chunk was closed."""

    index: int
    pieces: list[Piece] = field(default_factory=list)
    text_chars: int = 0
    bytes_done: int = 0
    documents: int = 0
    skipped: int = 0


def _chunks(
    sources: Sequence[Source],
    chunk_chars: int,
    piece_chars: int,
    cut: Cut | None,
    text_field: str,
    skip_bad_records: bool,
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
    ):
        chunk.pieces.append(piece)
        chunk.text_chars += len(piece.text)
        # A document of several pieces ends its chunk: then no chunk boundary falls between
        # the end of such a document and the moment its tokens are split (see data.shards).
        if chunk.text_chars >= chunk_chars or (piece.last and not piece.first):
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
) -> Iterator[Chunk]:
    """The pieces of `sources` (see `iter_pieces`) in chunks of about `chunk_chars` characters.

    The reading runs on a daemon thread; an error there is raised here, at the chunk where it
    happened. Closing the iterator early stops the thread.
    """
    slots: queue.Queue = queue.Queue(maxsize=_QUEUED)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in _chunks(
                sources, chunk_chars, piece_chars, cut, text_field, skip_bad_records
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
