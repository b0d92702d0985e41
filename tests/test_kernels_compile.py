"""The compile-only resource report (`python -m smallgpt.kernels.check --compile-only`) on the CPU.

Triton picks interpreter or compiler when it is first imported, so the report runs in a child
process without TRITON_INTERPRET. Compiled kernels are cached by Triton (keyed by source, options
and target) in a directory under the system temp dir, so reruns are quick. The test compiles the
cross-entropy kernels and the attention delta pass for all four architectures; the attention
forward/backward candidates (about 15 s each) are in the full report, run without `--kernel`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from smallgpt.kernels._support import triton_importable

_REPO = Path(__file__).resolve().parent.parent
_ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90")
_LIMITS = {"sm_80": 163 * 1024, "sm_86": 99 * 1024, "sm_89": 99 * 1024, "sm_90": 227 * 1024}
_KEYS = {
    "kernel",
    "head_dim",
    "dtype",
    "arch",
    "config",
    "shared_bytes",
    "registers",
    "spills",
    "fits",
}


def _run_check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(Path(tempfile.gettempdir()) / "smallgpt-triton-compile-cache")
    out = tmp_path / "report.json"
    command = [sys.executable, "-m", "smallgpt.kernels.check", "--compile-only", "--json", str(out)]
    proc = subprocess.run(
        [*command, *args], check=False, cwd=_REPO, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    records = json.loads(out.read_text()) if out.exists() else []
    return proc, records


@pytest.mark.slow
@pytest.mark.skipif(not triton_importable(), reason="triton is not installed")
def test_report_covers_every_architecture_and_judges_fit_by_the_limits(tmp_path):
    kernels = "cross_entropy,attention_backward_delta"
    proc, records = _run_check(tmp_path, "--arch", ",".join(_ARCHS), "--kernel", kernels)
    assert records, proc.stderr[-3000:]
    # 5 cross-entropy compilations and 4 head dims of the delta pass, per dtype and architecture
    assert len(records) == len(_ARCHS) * 2 * (5 + 4)
    for r in records:
        assert set(r) == _KEYS
        assert r["arch"] in _ARCHS and r["dtype"] in ("fp16", "bf16")
        assert (r["head_dim"] is None) == r["kernel"].startswith("cross_entropy")
        assert {"num_warps", "num_stages"} <= set(r["config"])
        assert 0 < r["registers"] <= 255 and r["shared_bytes"] >= 0 and r["spills"] >= 0
        assert r["fits"] == (r["shared_bytes"] <= _LIMITS[r["arch"]] and r["spills"] == 0)
    assert {r["arch"] for r in records} == set(_ARCHS)
    all_fit = all(r["fits"] for r in records)
    assert (proc.returncode == 0) == all_fit, proc.stderr[-3000:]


def test_check_refuses_to_run_under_the_interpreter(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "smallgpt.kernels.check", "--compile-only", "--arch", "sm_86"],
        check=False, cwd=_REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "TRITON_INTERPRET" in proc.stderr


def test_check_names_an_unknown_architecture(tmp_path):
    proc, records = _run_check(tmp_path, "--arch", "sm_75")
    assert proc.returncode == 2 and "sm_75" in proc.stderr and not records
