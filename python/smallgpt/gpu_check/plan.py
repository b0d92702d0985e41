"""What the GPU check measures and judges: the shapes, each part's time budget, the targets, and
`PartRun`, the record a part fills."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

# Per-part wall-clock budget in seconds (child start-up included); the sum stays under 8 minutes.
BUDGET_S: dict[str, int] = {
    "gpu_tests": 70,
    "attention": 140,  # a cold Triton cache: about 50 autotune candidates compile
    "linear_cross_entropy": 45,
    "cross_entropy_bandwidth": 30,
    "model": 130,  # torch.compile of the model, then 2 x 300 steps
    "compile_report": 50,
}
PARTS: tuple[str, ...] = tuple(BUDGET_S)
TARGETS: dict[str, tuple[str, float]] = {
    "attention_forward_speedup": (">=", 0.9),
    "attention_forward_backward_speedup": (">=", 0.8),
    "attention_max_abs_error": ("<=", 0.02),
    "linear_ce_peak_memory_ratio": ("<=", 0.25),
    "linear_ce_speedup": (">=", 1.0),
    "cross_entropy_bandwidth_fraction": (">=", 0.7),
    "model_mfu": (">=", 0.4),
    "gpu_tests_failed": ("<=", 0),
    "compile_report_mismatches": ("<=", 0),
}


@dataclass(frozen=True)
class Sizes:
    """The shapes one run measures: the real ones on a GPU, tiny ones for `--dry-run`."""

    attention: tuple[int, int, tuple[int, ...], tuple[int, ...]]  # batch, heads, seqs, head dims
    dropout: float
    linear_ce: tuple[int, int, int]  # tokens, hidden size, vocabulary
    cross_entropy: tuple[int, int]  # tokens, vocabulary
    model_steps: int
    warmup: int
    iters: int


GPU_SIZES = Sizes((8, 8, (1024, 2048), (64, 128)), 0.1, (16384, 1024, 50304), (16384, 50304),
                  300, 3, 20)  # fmt: skip
DRY_SIZES = Sizes((1, 2, (16, 32), (16, 32)), 0.1, (64, 32, 300), (64, 300), 2, 1, 1)


def check(name: str, value: float | None, dry_run: bool) -> dict:
    """A pass/fail record of `value` against TARGETS[name] (passed None: dry run or no value)."""
    op, target = TARGETS[name]
    passed = None
    if not dry_run and value is not None and not math.isnan(value):
        passed = value >= target if op == ">=" else value <= target
    return {"name": name, "value": value, "target": f"{op} {target:g}", "passed": passed}


@dataclass
class PartRun:
    """One part's inputs and what it has found so far. A part fills `figures` and `checks` and
    calls `save()` after each measurement, so one stopped at its budget keeps what it measured."""

    name: str
    out: Path
    sizes: Sizes
    dry_run: bool
    tests: str
    figures: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)
    status: str = "running"
    error: str | None = None
    start: float = field(default_factory=time.perf_counter)

    @property
    def path(self) -> Path:
        """Where the part's record goes: out/parts/<name>.json."""
        return self.out / "parts" / f"{self.name}.json"

    def check(self, name: str, value: float | None, case: str = "") -> None:
        """Record a pass/fail of `value` against TARGETS[name] (see `check`)."""
        self.checks.append({**check(name, value, self.dry_run), "case": case})

    def save(self) -> dict:
        """Write the record as it stands and return it."""
        record = {"name": self.name, "status": self.status, "seconds": time.perf_counter() -
                  self.start, "figures": self.figures, "checks": self.checks, "error": self.error}  # fmt: skip
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(record, indent=1), encoding="utf-8")
        return record
