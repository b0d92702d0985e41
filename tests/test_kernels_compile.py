"""The compile-only resource report (`python -m smallgpt.kernels.check --compile-only`) on the CPU.

Compiling every autotune candidate for sm_80, sm_86, sm_89 and sm_90 takes far longer than CI can
spend, so `make kernel-report` writes the full report into benches/kernel_report.json with the Triton
version and the sha256 of the kernel sources, and these tests check it: it must match the sources
(else it is stale), every candidate must fit its architecture and every (kernel, head dim, dtype,
architecture) must have one, the launch-time pruning must pick exactly the report's candidates, and
a recompiled sample of the report (every kernel, every architecture) must agree with it. Triton picks
interpreter or compiler when it is first imported, so everything that compiles runs in a child
process without TRITON_INTERPRET, with a fresh Triton cache (CI starts from a clean clone).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from smallgpt.kernels._support import triton_importable

_REPO = Path(__file__).resolve().parent.parent
_REPORT = _REPO / "benches" / "kernel_report.json"
_ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90")
# shared memory per block each architecture allows, from NVIDIA's CUDA programming guide
_LIMITS = {"sm_80": 163 * 1024, "sm_86": 99 * 1024, "sm_89": 99 * 1024, "sm_90": 227 * 1024}
_CAPABILITIES = {"sm_80": (8, 0), "sm_86": (8, 6), "sm_89": (8, 9), "sm_90": (9, 0)}
_HEAD_DIMS = (16, 32, 64, 128)
_TUNED = ("attention_forward", "attention_backward_kv", "attention_backward_q")
_ATTENTION = (*_TUNED, *(k + "_dropout" for k in _TUNED), "attention_backward_delta")
_CROSS_ENTROPY = (
    "cross_entropy_single_block_loss_and_grad",
    "cross_entropy_single_block_loss",
    "cross_entropy_looped_loss_and_grad",
    "cross_entropy_looped_loss",
    "cross_entropy_scale_rows",
)
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
needs_triton = pytest.mark.skipif(not triton_importable(), reason="triton is not installed")


def _compiler_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")
    return env


def _check(tmp_path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "smallgpt.kernels.check", "--compile-only", *args]
    return subprocess.run(
        command, check=False, cwd=_REPO, env=_compiler_env(tmp_path), capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


def _run_check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    out = tmp_path / "report.json"
    proc = _check(tmp_path, "--json", str(out), *args, timeout=900)
    records = json.loads(out.read_text()) if out.exists() else []
    return proc, records


def _config_key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def test_committed_report_matches_the_sources_and_every_candidate_fits():
    report = json.loads(_REPORT.read_text())
    for name, digest in report["sources_sha256"].items():
        current = hashlib.sha256((_REPO / "python" / name).read_bytes()).hexdigest()
        assert current == digest, f"{name} changed since {_REPORT.name}: run make kernel-report"
    kernel_sources = {
        f"smallgpt/kernels/{path.name}"
        for path in (_REPO / "python" / "smallgpt" / "kernels").glob("_*_triton.py")
    }
    assert kernel_sources <= set(report["sources_sha256"])
    assert report["triton"] and report["command"] == "make kernel-report"
    groups = defaultdict(list)
    for r in report["records"]:
        assert set(r) == _KEYS
        assert {"num_warps", "num_stages"} <= set(r["config"])
        # no candidate the kernels can choose may spill or pass the architecture's limits
        assert r["spills"] == 0 and 0 < r["registers"] <= 255, r
        assert 0 <= r["shared_bytes"] <= _LIMITS[r["arch"]] and r["fits"], r
        groups[(r["kernel"], r["head_dim"], r["dtype"], r["arch"])].append(r["config"])
    expected = {
        (kernel, head_dim, dtype, arch)
        for arch in _ARCHS
        for dtype in ("fp16", "bf16")
        for kernel, head_dim in [(k, d) for k in _ATTENTION for d in _HEAD_DIMS]
        + [(k, None) for k in _CROSS_ENTROPY]
    }
    assert set(groups) == expected
    # the candidate lists are small: the report stays cheap to rebuild
    assert max(len(configs) for configs in groups.values()) <= 3


_PRUNE_SCRIPT = """
import json, sys
import torch
from smallgpt.kernels import _attention_triton as attn

kernels = {"attention_forward": attn._attn_fwd_kernel,
           "attention_backward_kv": attn._attn_bwd_kv_kernel,
           "attention_backward_q": attn._attn_bwd_q_kernel}
chosen = {}
for cap in json.loads(sys.argv[1]):
    torch.cuda.get_device_capability = lambda device=None, cap=tuple(cap): cap
    for name, kernel in kernels.items():
        for dropout in (False, True):
            kept = kernel.early_config_prune(kernel.configs, {}, DROPOUT=dropout, Q=torch.empty(1))
            key = f"{cap[0]}.{cap[1]} {name}{'_dropout' if dropout else ''}"
            chosen[key] = [dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
                           for c in kept]
print(json.dumps(chosen))
"""


@needs_triton
def test_launch_keeps_exactly_the_reports_candidates_for_each_capability(tmp_path):
    report = json.loads(_REPORT.read_text())
    # 12.0 (RTX 50 series, 99 KB of shared memory) must get the candidates that fit sm_86/sm_89
    capabilities = {**_CAPABILITIES, "sm_86 (for 12.0)": (12, 0)}
    proc = subprocess.run(
        [sys.executable, "-c", _PRUNE_SCRIPT, json.dumps(list(capabilities.values()))],
        check=False, cwd=_REPO, env=_compiler_env(tmp_path), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    chosen = json.loads(proc.stdout)
    for label, (major, minor) in capabilities.items():
        arch = label.split()[0]
        for kernel in (*_TUNED, *(k + "_dropout" for k in _TUNED)):
            kept = {_config_key(c) for c in chosen[f"{major}.{minor} {kernel}"]}
            for head_dim in _HEAD_DIMS:
                for dtype in ("fp16", "bf16"):
                    compiled = {
                        _config_key(r["config"])
                        for r in report["records"]
                        if (r["kernel"], r["head_dim"], r["dtype"], r["arch"])
                        == (kernel, head_dim, dtype, arch)
                    }
                    assert kept == compiled, (label, kernel, head_dim, dtype)


@pytest.mark.slow
@needs_triton
def test_recompiled_sample_agrees_with_the_committed_report(tmp_path):
    proc = _check(tmp_path, "--verify", str(_REPORT), "--jobs", "1", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split() for line in proc.stdout.splitlines() if line.startswith("sm_")]
    assert {line[1] for line in lines} == {*_ATTENTION, *_CROSS_ENTROPY}
    assert {line[0] for line in lines} == set(_ARCHS)


def _tamper_hash(report: dict) -> str:
    name = next(iter(report["sources_sha256"]))
    report["sources_sha256"][name] = "0" * 64
    return "stale"


def _drop_a_candidate(report: dict) -> str:
    report["records"].pop()
    return "candidate lists"


def _spill_a_candidate(report: dict) -> str:
    record = next(r for r in report["records"] if r["kernel"] == "attention_forward_dropout")
    record.update(spills=64, fits=False)
    return "does not fit"


@needs_triton
@pytest.mark.parametrize("tamper", [_tamper_hash, _drop_a_candidate, _spill_a_candidate])
def test_verify_rejects_a_report_that_no_longer_holds(tmp_path, tamper):
    report = json.loads(_REPORT.read_text())
    message = tamper(report)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    proc = _check(tmp_path, "--verify", str(path))
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-3000:]
    # rejected before compiling anything: no sample line was printed
    assert not [line for line in proc.stdout.splitlines() if line.startswith("sm_")]


@pytest.mark.slow
@needs_triton
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
