"""The one-call GPU validation, `python -m smallgpt.gpu_check --out DIR [--dry-run]` (`make
gpu-check`): plan.py (shapes, budgets, targets), measure.py (timing, memory, compiled kernels),
parts.py (the six parts), runner.py (child processes, reports), cli.py."""

from smallgpt.gpu_check.cli import main
from smallgpt.gpu_check.measure import (
    compiled_kernels,
    median_seconds,
    peak_bandwidth,
    record_compiled_kernels,
)
from smallgpt.gpu_check.parts import PART_FUNCTIONS
from smallgpt.gpu_check.plan import (
    BUDGET_S,
    DRY_SIZES,
    GPU_SIZES,
    PARTS,
    TARGETS,
    PartRun,
    Sizes,
    check,
)
from smallgpt.gpu_check.runner import environment, markdown, run_all, run_part

__all__ = [
    "BUDGET_S",
    "DRY_SIZES",
    "GPU_SIZES",
    "PARTS",
    "PART_FUNCTIONS",
    "TARGETS",
    "PartRun",
    "Sizes",
    "check",
    "compiled_kernels",
    "environment",
    "main",
    "markdown",
    "median_seconds",
    "peak_bandwidth",
    "record_compiled_kernels",
    "run_all",
    "run_part",
]
