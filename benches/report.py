"""Each bench's figures, written into pytest-benchmark's `extra_info` (kept by `--benchmark-json`).

pytest-benchmark's own columns time the call given to the `benchmark` fixture: smallgpt's side in
process, or, where the measurement is a child process, that child's whole run (start-up included;
`benchmark.pedantic`). The figure the bench is about, measured as its module's docstring says, is
`extra_info["value"]`; beside it the fastest peer's figure and the ratio.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pytest_benchmark.fixture import BenchmarkFixture

# Units in which a smaller figure is the better one; every other unit is a rate or a speed-up.
_LOWER_IS_BETTER = {"s", "ms", "MB", "MiB"}


def report(
    benchmark: BenchmarkFixture,
    value: float,
    unit: str,
    peers: Mapping[str, float] | None = None,
    *,
    target: str | None = None,
    **details: object,
) -> None:
    """Record smallgpt's `value` (in `unit`) in `benchmark.extra_info`, against its peers.

    `peers` maps each peer's name to its figure in the same unit. The fastest peer is named in
    `peer` with its figure in `peer_value`, and `ratio` says how many times better smallgpt is than
    it (> 1: smallgpt ahead; the peer's time over ours for times and sizes, ours over the peer's
    for rates). `target` is the project's bar for that ratio; it is recorded, never asserted.
    Raises ValueError if a figure is not a positive number, as a ratio of it would mean nothing.
    """
    for name, figure in {"smallgpt": value, **(peers or {})}.items():
        if not figure > 0:
            raise ValueError(f"{name}'s figure must be a positive number of {unit}, got {figure}")
    lower = unit in _LOWER_IS_BETTER
    info: dict[str, object] = {"value": value, "unit": unit}
    if peers:
        ratios = {
            name: (figure / value if lower else value / figure) for name, figure in peers.items()
        }
        fastest = min(ratios, key=ratios.__getitem__)
        info.update(peer=fastest, peer_value=peers[fastest], ratio=ratios[fastest])
        if len(peers) > 1:
            info.update(peer_values=dict(peers), ratios=ratios)
    if target is not None:
        info["target"] = target
    # The machine is shared: the load beside each figure says how far to trust it.
    info["load_average_1min"] = os.getloadavg()[0]
    benchmark.extra_info.update(info, **details)
