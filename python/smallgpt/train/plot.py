"""Loss curves as a PNG (matplotlib is optional: without it, plotting is skipped with a note)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
from pathlib import Path


@functools.cache
def _figure_class() -> type | None:
    """matplotlib's Figure (no pyplot: the caller's backend is left alone), or None with a note."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("note: matplotlib is not installed; skipping the loss plot", file=sys.stderr)
        return None
    return Figure


def plot_loss_curves(records: Iterable[dict], path: str | Path) -> Path | None:
    """Draw train loss (records with kind "train") and validation loss (kind "val") against step.

    Writes a PNG at `path` and returns it; returns None, with a one-line note on stderr the first
    time, when matplotlib is not installed (`pip install smallgpt[plot]`).
    """
    figure_class = _figure_class()
    if figure_class is None:
        return None
    records = list(records)
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("kind") == "val"]
    fig = figure_class(figsize=(7, 4), dpi=120)
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=1.2)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation", linewidth=1.5, markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)
    return path
