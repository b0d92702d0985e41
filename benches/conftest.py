"""Benchmarks run only with `pytest benches --benchmark`; they report through pytest-benchmark.

Each bench measures smallgpt and its peer in the same run, times smallgpt's side with the
`benchmark` fixture and puts both figures and their ratio in the fixture's `extra_info`
(benches/report.py), so pytest-benchmark's `--benchmark-json`, `--benchmark-save`,
`--benchmark-compare` and `--benchmark-histogram` keep them. The machine (CPU model, platform,
versions of smallgpt's peers) goes into pytest-benchmark's `machine_info`.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import pytest
import torch

# Packages whose versions explain a figure: ours, the libraries under it, and every peer.
_VERSIONED = (
    "smallgpt",
    "torch",
    "triton",
    "numpy",
    "pytest-benchmark",
    "tiktoken",
    "tokenizers",
    "gigabpe",
    "gigatoken",
    "rustbpe",
    "flashbpe",
    "tokie",
    "fastokens",
    "liger-kernel",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    # pytest matches option names exactly, so this one does not clash with pytest-benchmark's
    # `--benchmark-*` options.
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


def _cpu_model() -> str:
    """The CPU's model name as lscpu prints it (/proc/cpuinfo or platform where lscpu is missing)."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        lscpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    lines = lscpu.splitlines() + (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip().lower() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in _VERSIONED:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Adds what the figures depend on to pytest-benchmark's machine_info."""
    machine_info["cpu_model"] = _cpu_model()
    machine_info["cpu_count"] = os.cpu_count()
    machine_info["platform"] = platform.platform()
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    machine_info["versions"] = _versions()
