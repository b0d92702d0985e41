"""Corpus inputs: text, JSONL and Parquet files (plain, .gz, .zst, .bz2), directories, globs and
`hf:NAME[:SPLIT]` datasets, read as documents in bounded memory."""

from smallgpt.corpus.chunks import Chunk, read_chunks
from smallgpt.corpus.sources import (
    COMPRESSIONS,
    FORMATS,
    HF_PREFIX,
    CorpusError,
    Piece,
    ReadStats,
    Records,
    Source,
    accepted_extensions,
    iter_documents,
    iter_pieces,
    pretoken_cut,
    resolve_sources,
)

__all__ = [
    "COMPRESSIONS",
    "FORMATS",
    "HF_PREFIX",
    "Chunk",
    "CorpusError",
    "Piece",
    "ReadStats",
    "Records",
    "Source",
    "accepted_extensions",
    "iter_documents",
    "iter_pieces",
    "pretoken_cut",
    "read_chunks",
    "resolve_sources",
]
