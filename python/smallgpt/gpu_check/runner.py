"""Running the parts, one child process each within its budget, and writing the two reports."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
import triton

from smallgpt.gpu_check.parts import PART_FUNCTIONS
from smallgpt.gpu_check.plan import BUDGET_S, DRY_SIZES, GPU_SIZES, PARTS, PartRun


def run_part(name: str, out: Path, dry_run: bool, tests: str) -> dict:
    """Run one part in this process and write out/parts/<name>.json; never raises."""
    run = PartRun(name, out, DRY_SIZES if dry_run else GPU_SIZES, dry_run, tests)
    try:
        PART_FUNCTIONS[name](run)
        run.status = "ok"
    except Exception as exc:  # noqa: BLE001 - a part's failure is its record, never a crash
        run.status = "error"
        run.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"
    return run.save()


def _run_child(name: str, out: Path, dry_run: bool, tests: str) -> dict:
    """Run part `name` in a child process within its budget; a crash or timeout is its record."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    if dry_run and name != "compile_report":  # the report compiles for a GPU target
        env["TRITON_INTERPRET"] = "1"
    command = [sys.executable, "-m", "smallgpt.gpu_check", "--part", name, "--out", str(out),
               "--tests", tests] + (["--dry-run"] if dry_run else [])  # fmt: skip
    path = out / "parts" / f"{name}.json"
    path.unlink(missing_ok=True)
    start = time.perf_counter()
    # its own session, so that an overrun kills the part's whole process group (pytest, compilers)
    with subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as proc:  # fmt: skip
        try:
            _, stderr = proc.communicate(timeout=BUDGET_S[name])
            status, failure = "error", f"exit {proc.returncode}: {stderr[-2000:]}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            status, failure = "timeout", f"over its {BUDGET_S[name]} s budget"
    record = {"name": name, "status": "running", "figures": {}, "checks": []}
    if path.exists():  # what the child saved, in full or up to where it stopped
        record = json.loads(path.read_text(encoding="utf-8"))
    if record["status"] == "running":  # it died or overran: keep its figures, say why
        record.update(status=status, error=failure, seconds=time.perf_counter() - start)
    return record


def environment(dry_run: bool) -> dict:
    """Device, driver and library versions."""
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "device": "cpu (dry run, Triton interpreter)" if dry_run else None,
        "capability": None,
        "driver": None,
    }
    if not dry_run:
        env["device"] = torch.cuda.get_device_name()
        env["capability"] = "sm_{}{}".format(*torch.cuda.get_device_capability())
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20, check=True,
            ).stdout.strip().splitlines()[0]  # fmt: skip
        except (OSError, subprocess.SubprocessError, IndexError):
            env["driver"] = "unknown (nvidia-smi failed)"
    return env


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]


def markdown(report: dict) -> str:
    """The report as Markdown: environment, then each part's checks and figures."""
    lines = ["# smallgpt GPU check" + (" (dry run: no targets judged)" if report["dry_run"] else ""),
             "", "| | |", "|---|---|"]  # fmt: skip
    lines += [f"| {key} | {value} |" for key, value in report["environment"].items()]
    lines += ["", f"Overall: {_verdict(report['passed'])}; {report['seconds']:.0f} s in all.", ""]
    for part in report["parts"]:
        lines += [f"## {part['name']}: {part['status']} ({part['seconds']:.1f} s)", ""]
        if part["error"]:
            lines += ["```", part["error"], "```", ""]
        if part["checks"]:
            lines += ["| check | case | value | target | result |", "|---|---|---|---|---|"]
            for c in part["checks"]:
                value = "—" if c["value"] is None else f"{c['value']:.4g}"
                lines.append(f"| {c['name']} | {c.get('case', '')} | {value} | {c['target']} | "
                             f"{_verdict(c['passed'])} |")  # fmt: skip
            lines.append("")
        figures = {k: v for k, v in part["figures"].items() if k != "compiled_kernels"}
        if figures:
            lines += ["```json", json.dumps(figures, indent=1), "```", ""]
    return "\n".join(lines)


def run_all(out: Path, dry_run: bool, tests: str = "tests", parts: tuple[str, ...] = PARTS) -> dict:
    """Run `parts` one child process each, write out/gpu_check.json and .md, return the report.

    passed: True when every part ran and every check passed; False when one did not; None on a dry
    run whose parts all ran (its figures are judged against no target).
    """
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = [_run_child(name, out, dry_run, tests) for name in parts]
    ran = all(r["status"] == "ok" for r in results)
    verdicts = [c["passed"] for r in results for c in r["checks"]]
    passed = (None if ran else False) if dry_run else ran and all(v is True for v in verdicts)
    report = {"dry_run": dry_run, "environment": environment(dry_run), "passed": passed,
              "seconds": time.perf_counter() - start, "parts": results}  # fmt: skip
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (out / "gpu_check.md").write_text(markdown(report), encoding="utf-8")
    return report
