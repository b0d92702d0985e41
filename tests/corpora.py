"""The one place that finds the shared corpora (../shared/data) for tests and benches."""

from __future__ import annotations

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
