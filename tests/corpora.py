"""The one place that finds the shared corpora (../shared/data) for tests and benches."""

from __future__ import annotations

import bz2
import gzip
import json
import os
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent

# name -> path relative to the data directory
CORPORA: dict[str, str] = {
    "tinyshakespeare": "tinyshakespeare.txt",
    "wikitext2_valid": "wikitext2/valid.txt",
    "wikitext2_test": "wikitext2/test.txt",
    "gutenberg_10mb": "gutenberg_en_10mb.txt",
    "gutenberg": "gutenberg_en.txt",
    "multilingual_emoji": "multilingual_emoji.txt",
}


def shared_data_dir() -> Path | None:
    """Return the shared data directory, or None when it is not present."""
    candidates = []
    if os.environ.get("SMALLGPT_SHARED_DATA"):
        candidates.append(Path(os.environ["SMALLGPT_SHARED_DATA"]))
    candidates += [_REPO.parent / "shared" / "data", _REPO / "shared" / "data"]
    for candidate in candidates:
        if (candidate / "tinyshakespeare.txt").is_file():
            return candidate
    return None


def corpus_path(name: str) -> Path | None:
    """Path of a named corpus (a key of CORPORA), or None when the data directory is missing."""
    base = shared_data_dir()
    return None if base is None else base / CORPORA[name]


def gutenberg_books(limit_bytes: int | None = None) -> list[str] | None:
    """The books of the Gutenberg corpus, one text each, in order (from its .books.tsv index),
    until `limit_bytes` of them are read; None when the data directory is missing."""
    base = shared_data_dir()
    if base is None:
        return None
    data = (base / "gutenberg_en.txt").read_bytes()
    books = []
    index = (base / "gutenberg_en.books.tsv").read_text(encoding="utf-8").splitlines()[1:]
    for row in index:
        _, offset, length, *_ = row.split("\t")
        books.append(data[int(offset) : int(offset) + int(length)].decode("utf-8"))
        if limit_bytes is not None and sum(map(len, books)) >= limit_bytes:
            break
    return books


def write_jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    """`docs` as JSON lines {"id": i, field: doc}, compressed by `path`'s extension."""
    lines = "".join(
        json.dumps({"id": i, field: doc}, ensure_ascii=False) + "\n" for i, doc in enumerate(docs)
    ).encode("utf-8")
    return write_bytes(path, lines)


def write_bytes(path: Path, data: bytes) -> Path:
    """`data` at `path`, compressed as its extension says (.gz, .bz2, .zst or none)."""
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=1)
    elif path.suffix == ".bz2":
        data = bz2.compress(data, compresslevel=1)
    elif path.suffix == ".zst":
        import zstandard  # the "data" extra

        data = zstandard.ZstdCompressor(level=1).compress(data)
    path.write_bytes(data)
    return path


def write_parquet(path: Path, docs: list[str], row_group_size: int = 7) -> Path:
    """`docs` as a Parquet file with columns id and text, in row groups of `row_group_size`."""
    import pyarrow as pa  # the "data" extra
    import pyarrow.parquet as pq

    table = pa.table({"id": list(range(len(docs))), "text": docs})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def write_text_dir(root: Path, docs: list[str]) -> Path:
    """One `.txt` file per document in `root`, named so sorted order is document order."""
    root.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        (root / f"doc_{i:05d}.txt").write_text(doc, encoding="utf-8")
    return root


def sample_documents(base: Path) -> list[str]:
    """Real, varied documents from `base` (the data directory): Shakespeare's speeches,
    multilingual lines with emoji, an empty one and one holding `<|endoftext|>` as text."""
    plays = (base / "tinyshakespeare.txt").read_text(encoding="utf-8")[:40_000]
    world = (base / "multilingual_emoji.txt").read_text(encoding="utf-8")[:12_000]
    found = [p for p in plays.split("\n\n") if p][:30] + [w for w in world.split("\n") if w][:20]
    return [*found[:10], "", "a plain <|endoftext|> inside", *found[10:]]


# The file forms of one set of documents that must read the same.
FORMS = ("jsonl", "jsonl.gz", "jsonl.zst", "ndjson.bz2", "parquet", "parquet.gz")


def write_form(root: Path, form: str, docs: list[str]) -> Path:
    """`docs` as `root/docs.<form>` (a form of FORMS)."""
    path = root / f"docs.{form}"
    if form.startswith("parquet"):
        plain = write_parquet(root / f"plain-{form}.parquet", docs)
        return write_bytes(path, plain.read_bytes())
    return write_jsonl(path, docs)
