"""The saved state of an interrupted shard preparation (`prepare_state.json`): what a fresh
one holds, and why a saved one cannot be continued (inputs, tokenizer or options changed, or
the partial files do not hold what it says)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smallgpt.corpus.sources import Source

SPLITS = ("train", "val")
STATE_FILE = "prepare_state.json"
STATE_VERSION = 2  # 2: records are read in blocks (options["record_bytes"]), chunks end elsewhere
PENDING_FILE = "pending.bin.partial"  # tokens of documents not yet assigned to a split


def empty_state(sources: list[Source]) -> dict:
    """The state of a preparation that has encoded nothing yet."""
    split = {"tokens": 0, "text_bytes": 0, "documents": 0}
    return {
        "chunks_done": 0,
        "splits": {name: dict(split) for name in SPLITS},
        "pending_tokens": 0,
        "skipped_records": 0,
        "sources": [{"tokens": 0, "documents": 0} for _ in sources],
    }


def why_not_resume(saved: Any, header: dict, out: Path, itemsize: int) -> str | None:
    """Why the saved state cannot be continued (None: it can)."""
    if not isinstance(saved, dict) or saved.get("version") != STATE_VERSION:
        return f"{STATE_FILE} is from another smallgpt version"
    if saved.get("tokenizer_sha256") != header["tokenizer_sha256"]:
        return "the tokenizer changed"
    if saved.get("options") != header["options"]:
        changed = [k for k, v in header["options"].items() if saved["options"].get(k) != v]
        return f"the options changed ({', '.join(changed) or 'their set'})"
    old, new = saved.get("inputs", []), header["inputs"]
    for before, now in zip(old, new):
        if before != now:
            return f"input {now.get('path', now.get('name'))} changed (size, mtime or content)"
    if len(old) != len(new):
        return f"the inputs changed ({len(old)} before, {len(new)} now)"
    state = saved["state"]
    sizes = {name: state["splits"][name]["tokens"] for name in SPLITS}
    sizes["pending"] = state["pending_tokens"]
    for name, tokens in sizes.items():
        path = out / (PENDING_FILE if name == "pending" else f"{name}.bin.partial")
        if state.get("finished"):
            if name == "pending":
                continue  # not needed any more
            if not path.is_file():
                path = out / f"{name}.bin"
        if not path.is_file() or path.stat().st_size < tokens * itemsize:
            return f"{path.name} is missing or shorter than the saved state says"
    return None
