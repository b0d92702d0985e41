"""`python -m smallgpt.gpu_check`: the dry run goes end to end on the CPU and writes both reports;
a part that fails or overruns its budget is recorded and the others still run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from smallgpt import gpu_check
from smallgpt.kernels import check as kernels_check

TESTS = Path(__file__).resolve().parent
CHECK_KEYS = {"name", "value", "target", "passed"}


def test_dry_run_runs_every_part_and_writes_both_reports(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "smallgpt.gpu_check", "--dry-run", "--out", str(tmp_path),
         "--tests", str(TESTS / "test_model.py")],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    markdown = (tmp_path / "gpu_check.md").read_text(encoding="utf-8")

    assert report["dry_run"] is True and report["passed"] is None
    assert {"device", "driver", "torch", "triton", "python", "cuda"} <= set(report["environment"])
    assert report["environment"]["torch"] == torch.__version__
    parts = {p["name"]: p for p in report["parts"]}
    assert list(parts) == list(gpu_check.PARTS)
    for part in report["parts"]:
        assert part["status"] == "ok", part
        assert part["error"] is None and part["checks"], part
        assert f"## {part['name']}: ok" in markdown
        for c in part["checks"]:
            assert set(c) >= CHECK_KEYS and c["passed"] is None  # a dry run judges nothing
            assert c["name"] in gpu_check.TARGETS and c["target"] in markdown

    tests = parts["gpu_tests"]["figures"]
    assert tests["tests"] >= 1 and tests["failures"] == tests["errors"] == 0
    if not torch.cuda.is_available():
        assert tests["skipped"] == tests["tests"]
    rows = parts["attention"]["figures"]["rows"]
    _, _, seqs, head_dims = gpu_check.DRY_SIZES.attention
    assert len(rows) == len(seqs) * len(head_dims) * 2  # with and without dropout
    for row in rows:
        assert row["ours_forward_ms"] > 0 and row["sdpa_forward_backward_ms"] > 0
        if row["dropout"] == 0.0:  # fp32 inputs of unit scale against PyTorch's SDPA
            assert row["max_abs_error"] < 1e-4, row
    linear = parts["linear_cross_entropy"]["figures"]
    assert linear["speedup"] == pytest.approx(linear["naive_ms"] / linear["fused_ms"])
    assert parts["cross_entropy_bandwidth"]["figures"]["loss_gbs"] > 0
    model = parts["model"]["figures"]
    assert model["eager_tokens_per_s"] > 0 and model["eager_mfu"] is None  # no peak for a CPU
    compiled = parts["compile_report"]["figures"]
    assert compiled["compiled"] >= 1 and compiled["unfit_groups"] == []


def test_a_failing_or_overrunning_part_is_recorded_and_the_others_run(tmp_path, monkeypatch):
    monkeypatch.setitem(gpu_check.BUDGET_S, "model", 0.01)
    report = gpu_check.run_all(
        tmp_path, dry_run=True, tests=str(tmp_path / "missing"),
        parts=("gpu_tests", "model", "cross_entropy_bandwidth"),
    )  # fmt: skip
    parts = {p["name"]: p for p in report["parts"]}
    assert parts["gpu_tests"]["status"] == "error"
    assert "FileNotFoundError" in parts["gpu_tests"]["error"]
    assert parts["model"]["status"] == "timeout" and "budget" in parts["model"]["error"]
    assert parts["cross_entropy_bandwidth"]["status"] == "ok"
    assert report["passed"] is False
    markdown = (tmp_path / "gpu_check.md").read_text(encoding="utf-8")
    assert "## gpu_tests: error" in markdown and "## model: timeout" in markdown


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("attention_forward_speedup", 0.95, True),
        ("attention_forward_speedup", 0.85, False),
        ("linear_ce_peak_memory_ratio", 0.25, True),
        ("linear_ce_peak_memory_ratio", 0.3, False),
        ("model_mfu", None, None),
        ("model_mfu", float("nan"), None),
    ],
)
def test_checks_compare_with_the_issue_targets(name, value, expected):
    assert gpu_check.check(name, value, dry_run=False)["passed"] is expected
    assert gpu_check.check(name, value, dry_run=True)["passed"] is None


def test_a_gpu_run_without_cuda_says_to_use_the_dry_run(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "--dry-run" in capsys.readouterr().err
    assert gpu_check.peak_bandwidth(torch.device("cpu")) is None


def test_the_kernels_check_points_gpu_users_to_the_gpu_check(capsys):
    assert kernels_check.main(["--gpu"]) == 2
    assert "python -m smallgpt.gpu_check --out DIR" in capsys.readouterr().err


def test_the_part_budgets_fit_the_eight_minutes_with_room_for_the_parent():
    assert set(gpu_check.BUDGET_S) == set(gpu_check.PARTS)
    assert sum(gpu_check.BUDGET_S.values()) <= 8 * 60 - 10
