"""The byte progress bar that the Rust file encoders report to."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def file_progress_bar(path: str, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """Yield a callback taking the bytes of `path` done so far, drawn as a tqdm bar, or None
    (no bar, and the Rust side skips its reports) when not `enabled`."""
    if not enabled:
        yield None
        return
    # a missing file gets a bar without a total; the encoder then raises FileNotFoundError
    size = os.path.getsize(path) if os.path.exists(path) else None
    with tqdm(total=size, unit="B", unit_scale=True, desc=os.path.basename(path)) as bar:

        def update(done: int) -> None:
            bar.update(done - bar.n)

        yield update
