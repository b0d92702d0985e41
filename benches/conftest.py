"""Benchmarks run only with `pytest benches --benchmark`.

Each benchmark measures smallgpt and its peer in the same run and reports the ratio; results are printed
in a table at the end of the session (and kept in `benches/last_run.json`) for benches/RESULTS.md.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

_RESULTS: list[dict] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        help="run the speed and memory comparisons in benches/ (skipped otherwise)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--benchmark"):
        return
    skip = pytest.mark.skip(reason="benchmarks run only with `pytest benches --benchmark`")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def record():
    """Call `record(group, name, value, unit, **details)` to put a figure in the end-of-run table."""

    def _record(group: str, name: str, value: float, unit: str, **details) -> None:
        _RESULTS.append({"group": group, "name": name, "value": value, "unit": unit, **details})

    return _record


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _RESULTS:
        return
    terminalreporter.section("smallgpt benchmark figures")
    for row in _RESULTS:
        extra = {k: v for k, v in row.items() if k not in ("group", "name", "value", "unit")}
        terminalreporter.write_line(
            f"{row['group']:<14} {row['name']:<48} {row['value']:>12.4g} {row['unit']:<8} {extra or ''}"
        )
    out = Path(__file__).parent / "last_run.json"
    out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "processor": platform.processor(),
                "results": _RESULTS,
            },
            indent=1,
        )
    )
