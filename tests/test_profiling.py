"""train.profile: a Chrome trace, TensorBoard profiler files and the top-operator table; nothing
at all when the option is off."""

from __future__ import annotations

import json
import re

import pytest
import torch
from smallgpt.train.profiling import PROFILE_DIR, TABLE_FILE, TRACE_FILE, top_operators_table
from train_helpers import make_shards, run_tiny, single_thread


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    with single_thread():
        return make_shards(tmp_path_factory.mktemp("profiling"))


def table_rows(table: str) -> list[tuple[str, float]]:
    """(operator, share in %) of each row of the printed table (names may hold spaces, e.g.
    autograd::engine::evaluate_function: MmBackward0)."""
    return [
        (m.group(1), float(m.group(2)))
        for m in re.finditer(r"^(.+?)\s+\d+\s+[\d.]+\s+([\d.]+)%$", table, re.MULTILINE)
    ]


def test_profile_writes_a_chrome_trace_of_aten_operators_and_prints_the_table(
    shards, tmp_path, capsys
):
    with single_thread():
        summary, _ = run_tiny(
            shards,
            tmp_path / "run",
            "train.profile=true",
            "train.profile_wait=2",
            "train.profile_steps=3",
            "train.max_steps=6",
        )
    assert summary.steps == 6
    out_dir = tmp_path / "run" / PROFILE_DIR
    trace = json.loads((out_dir / TRACE_FILE).read_text())
    names = {e.get("name", "") for e in trace["traceEvents"]}
    assert any(name.startswith("aten::") for name in names)
    assert {f"ProfilerStep#{i}" for i in (2, 3, 4)} <= names  # the steps after the warm-up
    assert list(out_dir.glob("*.pt.trace.json")), "TensorBoard profiler file missing"

    printed = capsys.readouterr().out
    table = (out_dir / TABLE_FILE).read_text()
    assert table.strip() in printed
    assert "over 3 profiled steps" in table
    rows = table_rows(table)
    assert len(rows) == 15
    assert all(name in names for name, _ in rows)  # every listed operator is in the trace
    assert any(name.startswith("aten::") for name, _ in rows)
    shares = [share for _, share in rows]
    assert shares == sorted(shares, reverse=True)
    assert 0 < sum(shares) <= 100
    assert "ui.perfetto.dev" in printed and f"tensorboard --logdir {out_dir}" in printed


def test_top_operators_table_shares_match_a_matmul_dominated_step():
    a = torch.randn(256, 256)
    with torch.profiler.profile(
        schedule=torch.profiler.schedule(wait=0, warmup=1, active=2, repeat=1)
    ) as profile:
        for _ in range(3):
            for _ in range(20):
                a @ a
            profile.step()
    rows = table_rows(top_operators_table(profile.key_averages(), device=False))
    assert rows[0][0] == "aten::mm"
    assert rows[0][1] > 50  # 20 large matmuls make most of each step


def test_top_operators_table_refuses_a_profile_without_steps():
    with torch.profiler.profile() as profile:
        torch.ones(3).sum()
    with pytest.raises(ValueError, match="ProfilerStep"):
        top_operators_table(profile.key_averages(), device=False)


def test_a_run_ending_during_the_profile_warmup_says_no_trace_was_written(shards, tmp_path, capsys):
    with single_thread():
        run_tiny(
            shards,
            tmp_path / "run",
            "train.profile=true",
            "train.profile_wait=3",
            "train.max_steps=2",
        )
    assert "no trace written" in capsys.readouterr().out
    assert not (tmp_path / "run" / PROFILE_DIR / TRACE_FILE).exists()


def test_a_run_ending_before_the_last_profiled_step_writes_what_it_recorded(
    shards, tmp_path, capsys
):
    with single_thread():
        run_tiny(shards, tmp_path / "run", "train.profile=true", "train.max_steps=4")
    trace = json.loads((tmp_path / "run" / PROFILE_DIR / TRACE_FILE).read_text())
    assert any(e.get("name", "").startswith("aten::") for e in trace["traceEvents"])
    assert "no trace written" not in capsys.readouterr().out


def test_profiling_off_creates_no_profiler(shards, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.profiler.profile created with train.profile=false")

    monkeypatch.setattr(torch.profiler, "profile", refuse)
    with single_thread():
        summary, _ = run_tiny(shards, tmp_path / "run", "train.max_steps=4")
    assert summary.steps == 4
    assert not (tmp_path / "run" / PROFILE_DIR).exists()
