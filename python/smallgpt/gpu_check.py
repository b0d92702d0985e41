"""`python -m smallgpt.gpu_check --out DIR` (`make gpu-check`): one call that validates a CUDA GPU.

Runs six parts, each in its own child process under its own time budget (so a CUDA error, a hang
or a crash in one part is recorded and never stops the others; the budgets add up to under 8
minutes): the `gpu`-marked tests; attention forward and forward+backward against SDPA's flash
backend; the fused linear cross-entropy's peak memory and speed against `F.cross_entropy(hidden @
weight.T)` (and Liger-Kernel's, if importable); the cross-entropy kernel's memory bandwidth as a
fraction of the device's; 300 training steps of the rtx-25m model in bf16 with and without
`torch.compile` (tokens/s, MFU); and the compile-only resource report for the device's own
architecture compared with the kernels that actually ran. Writes DIR/gpu_check.json and
DIR/gpu_check.md: the environment, every figure, and pass/fail against the targets.

`--dry-run` runs the same pipeline on the CPU under the Triton interpreter at tiny shapes (a few
steps of a tiny model, no compile) to show the script works end to end; its figures are judged
against no target. This module sits on top of the package (it builds a SmallGPT and uses the
evaluate stage's MFU), so it is not reachable as `python -m smallgpt.kernels.check`.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction

from smallgpt.config.loader import load_config
from smallgpt.evaluate.metrics import model_flops_utilization, peak_flops
from smallgpt.kernels import _attention_triton, _cross_entropy_triton, resources
from smallgpt.kernels.attention import flash_attention
from smallgpt.kernels.cross_entropy import cross_entropy, linear_cross_entropy
from smallgpt.model.config import ModelConfig
from smallgpt.model.gpt import SmallGPT

# Peak DRAM bandwidth in GB/s by a substring of the CUDA device name; the first match wins, so
# more specific names come first (vendor data sheets).
_PEAK_BANDWIDTH_GBS: tuple[tuple[str, float], ...] = (
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("L40", 864.0),
    ("L4", 300.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("RTX 5090", 1792.0),
    ("RTX 4090", 1008.0),
    ("RTX 4080", 717.0),
    ("RTX 3090", 936.0),
    ("RTX 3080", 760.0),
    ("RTX A6000", 768.0),
)

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


def peak_bandwidth(device: torch.device) -> float | None:
    """Peak DRAM bandwidth of `device` in bytes/s, or None (CPU, or a GPU not in the table)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbs * 1e9 for key, gbs in _PEAK_BANDWIDTH_GBS if key in name), None)


def check(name: str, value: float | None, dry_run: bool) -> dict:
    """A pass/fail record of `value` against TARGETS[name] (passed None: dry run or no value)."""
    op, target = TARGETS[name]
    passed = None
    if not dry_run and value is not None and not math.isnan(value):
        passed = value >= target if op == ">=" else value <= target
    return {"name": name, "value": value, "target": f"{op} {target:g}", "passed": passed}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, sizes: Sizes) -> float:
    """Median wall time of `fn` in seconds over `sizes.iters` calls after `sizes.warmup` calls."""
    for _ in range(sizes.warmup):
        fn()
    times = []
    for _ in range(sizes.iters):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compiled_kernels() -> list[dict]:
    """Resources of every Triton kernel compiled in this process (none under the interpreter)."""
    found = []
    for module in (_attention_triton, _cross_entropy_triton):
        for obj in vars(module).values():
            fn = obj.fn if isinstance(obj, Autotuner) else obj
            if not isinstance(fn, JITFunction):
                continue
            for caches in fn.device_caches.values():
                for kernel in caches[0].values():
                    found.append({
                        "fn": fn.__name__,
                        "num_warps": kernel.metadata.num_warps,
                        "num_stages": kernel.metadata.num_stages,
                        "shared_bytes": int(kernel.metadata.shared),
                        "registers": getattr(kernel, "n_regs", None),
                        "spills": getattr(kernel, "n_spills", None),
                    })  # fmt: skip
    return found


def record_compiled_kernels(figures: dict) -> None:
    """Put `compiled_kernels()` in `figures`, or why Triton's cache could not be read (its layout is
    Triton's internals): the measurements stand either way."""
    try:
        figures["compiled_kernels"] = compiled_kernels()
    except (AttributeError, IndexError, TypeError, ValueError) as exc:
        figures["compiled_kernels_error"] = (
            f"triton {triton.__version__}: {type(exc).__name__}: {exc}"
        )


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


# ---- the parts: each fills its PartRun and runs in its own child process ----


def part_gpu_tests(run: PartRun) -> None:
    """`pytest -m gpu` over `run.tests`, read back from its JUnit XML report."""
    if not Path(run.tests).exists():
        raise FileNotFoundError(
            f"no tests at {run.tests!r}: run from the repository root or --tests"
        )
    report = run.out / "gpu_tests.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
               "--continue-on-collection-errors", run.tests, f"--junitxml={report}"]  # fmt: skip
    proc = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=BUDGET_S["gpu_tests"] - 10
    )
    if not report.exists():
        raise RuntimeError(
            f"pytest wrote no report (exit {proc.returncode}):\n{proc.stdout[-2000:]}"
        )
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    run.figures.update(counts, failed=failed, pytest_exit=proc.returncode)
    run.check("gpu_tests_failed", float(len(failed)))


def part_attention(run: PartRun) -> None:
    """Forward and forward+backward time of `flash_attention` and SDPA (flash backend on CUDA)."""
    sizes, device, dtype = run.sizes, _device(run.dry_run), _dtype(run.dry_run)
    batch, heads, seqs, head_dims = sizes.attention
    rows: list[dict] = []
    run.figures.update(shape=[batch, heads], dtype=str(dtype), rows=rows)
    for seq in seqs:
        for head_dim in head_dims:
            for dropout in (0.0, sizes.dropout):
                q, k, v = (
                    torch.randn(batch, heads, seq, head_dim, device=device, dtype=dtype,
                                requires_grad=True)
                    for _ in range(3)
                )  # fmt: skip
                ours = functools.partial(flash_attention, q, k, v, causal=True, dropout_p=dropout)
                theirs = functools.partial(_sdpa, q, k, v, dropout, device)
                row = {"seq": seq, "head_dim": head_dim, "dropout": dropout}
                for label, fn in (("ours", ours), ("sdpa", theirs)):
                    row[f"{label}_forward_ms"] = 1e3 * median_seconds(fn, device, sizes)
                    row[f"{label}_forward_backward_ms"] = 1e3 * median_seconds(
                        lambda fn=fn: fn().sum().backward(), device, sizes
                    )
                case = f"seq {seq} head_dim {head_dim} p {dropout}"
                if dropout == 0.0:
                    row["max_abs_error"] = (ours() - theirs()).abs().max().item()
                    run.check("attention_max_abs_error", row["max_abs_error"], case)
                row["forward_speedup"] = row["sdpa_forward_ms"] / row["ours_forward_ms"]
                row["forward_backward_speedup"] = (
                    row["sdpa_forward_backward_ms"] / row["ours_forward_backward_ms"]
                )
                run.check("attention_forward_speedup", row["forward_speedup"], case)
                run.check(
                    "attention_forward_backward_speedup", row["forward_backward_speedup"], case
                )
                rows.append(row)
                record_compiled_kernels(run.figures)
                run.save()


def _sdpa(q, k, v, dropout: float, device: torch.device):
    if device.type != "cuda":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)


def _peak_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak CUDA memory `fn` allocates above what was allocated before it (None on CPU)."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def part_linear_cross_entropy(run: PartRun) -> None:
    """Peak memory and forward+backward time: fused, naive (`F.cross_entropy(h @ W.T)`), Liger."""
    sizes, device, dtype = run.sizes, _device(run.dry_run), _dtype(run.dry_run)
    tokens, width, vocab = sizes.linear_ce
    hidden = torch.randn(tokens, width, device=device, dtype=dtype, requires_grad=True)
    weight = (torch.randn(vocab, width, device=device, dtype=dtype) / width**0.5).requires_grad_()
    targets = torch.randint(0, vocab, (tokens,), device=device)
    losses = {
        "fused": lambda: linear_cross_entropy(hidden, weight, targets),
        "naive": lambda: F.cross_entropy(hidden @ weight.T, targets),
    }
    try:  # the optional Liger-Kernel peer (the bench extra)
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss()
        losses["liger"] = lambda: liger(weight, hidden, targets)
    except ImportError:
        pass
    figures = run.figures
    figures.update(shape=[tokens, width, vocab], dtype=str(dtype))

    def step(loss_fn):
        hidden.grad = weight.grad = None
        loss_fn().backward()

    for name, loss_fn in losses.items():
        try:
            figures[f"{name}_ms"] = 1e3 * median_seconds(lambda fn=loss_fn: step(fn), device, sizes)
            hidden.grad = weight.grad = None  # both paths' peaks count their own gradients
            peak = _peak_bytes(lambda fn=loss_fn: step(fn), device)
        except Exception as exc:  # the optional peer failing leaves ours measured
            if name != "liger":
                raise
            figures["liger_error"] = f"{type(exc).__name__}: {exc}"
            continue
        figures[f"{name}_peak_mib"] = None if peak is None else peak / 2**20
        run.save()
    ratio = None
    if figures["naive_peak_mib"]:
        ratio = figures["fused_peak_mib"] / figures["naive_peak_mib"]
    figures["peak_memory_ratio"] = ratio
    figures["speedup"] = figures["naive_ms"] / figures["fused_ms"]
    record_compiled_kernels(figures)
    run.check("linear_ce_peak_memory_ratio", ratio)
    run.check("linear_ce_speedup", figures["speedup"])


def part_cross_entropy_bandwidth(run: PartRun) -> None:
    """Bandwidth of `cross_entropy`: the loss alone reads the logits once; loss and gradient also
    write the gradient (the kernel computes it in the forward). Bytes are that minimum traffic."""
    sizes, device, dtype = run.sizes, _device(run.dry_run), _dtype(run.dry_run)
    tokens, vocab = sizes.cross_entropy
    logits = torch.randn(tokens, vocab, device=device, dtype=dtype)
    targets = torch.randint(0, vocab, (tokens,), device=device)
    grad_logits = logits.detach().clone().requires_grad_()
    size = logits.numel() * logits.element_size()
    peak = peak_bandwidth(device)
    figures = run.figures
    figures.update(shape=[tokens, vocab], dtype=str(dtype),
                   peak_bandwidth_gbs=None if peak is None else peak / 1e9)  # fmt: skip
    for label, tensor, traffic in (
        ("loss", logits, size),
        ("loss_and_grad", grad_logits, 2 * size),
    ):
        seconds = median_seconds(lambda t=tensor: cross_entropy(t, targets), device, sizes)
        figures[f"{label}_ms"] = 1e3 * seconds
        figures[f"{label}_gbs"] = traffic / seconds / 1e9
        fraction = None if peak is None else traffic / seconds / peak
        figures[f"{label}_bandwidth_fraction"] = fraction
        run.check("cross_entropy_bandwidth_fraction", fraction, label)
        run.save()
    record_compiled_kernels(figures)


def part_model(run: PartRun) -> None:
    """Training steps of the rtx-25m model (random tokens), eager and compiled: tokens/s, MFU."""
    sizes, device = run.sizes, _device(run.dry_run)
    if run.dry_run:
        config = ModelConfig(vocab_size=256, embed_dim=32, num_heads=2, num_layers=2,
                             max_seq_len=32, dropout=0.1, attention="auto")  # fmt: skip
        batch, seq, modes = 2, 32, (False,)
    else:
        cfg = load_config("rtx-25m", ["data.shard_dir=unused"])  # the check feeds random tokens
        m = cfg.model
        config = ModelConfig(vocab_size=m.vocab_size, embed_dim=m.embed_dim,
                             num_heads=m.num_heads, num_layers=m.num_layers,
                             max_seq_len=m.max_seq_len, dropout=m.dropout,
                             attention=m.attention, bias=m.bias)  # fmt: skip
        batch, seq, modes = cfg.train.batch_size, cfg.data.seq_len, (False, True)
    figures = run.figures
    figures.update(batch=batch, seq=seq, steps=sizes.model_steps)
    errors: dict[str, str] = {}
    for compiled in modes:
        label = "compiled" if compiled else "eager"
        try:
            tokens_per_s, flops = _train_rate(config, batch, seq, compiled, device, sizes)
        except Exception as exc:  # noqa: BLE001 - one mode failing leaves the other's figures
            errors[label] = f"{type(exc).__name__}: {exc}"
            figures["errors"] = errors
            continue
        mfu = model_flops_utilization(flops, tokens_per_s, peak_flops(device))
        figures[f"{label}_tokens_per_s"] = tokens_per_s
        figures[f"{label}_mfu"] = mfu
        run.check("model_mfu", mfu, label)
        run.save()
    if not run.checks:
        raise RuntimeError(f"no training mode ran: {errors}")


def _train_rate(
    config: ModelConfig, batch: int, seq: int, compiled: bool, device: torch.device, sizes: Sizes
) -> tuple[float, float]:
    """(tokens/s over `sizes.model_steps` timed steps, training FLOPs per token)."""
    torch.manual_seed(0)
    model = SmallGPT.from_config(config).to(device)
    flops = model.estimate_flops_per_token(seq)
    step_model = torch.compile(model) if compiled else model
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    tokens = torch.randint(0, config.vocab_size, (batch, seq), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            _, loss = step_model(tokens, tokens, return_logits=False)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(sizes.warmup):  # compiles, autotunes
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(sizes.model_steps):
        step()
    _sync(device)
    return batch * seq * sizes.model_steps / (time.perf_counter() - start), flops


def part_compile_report(run: PartRun) -> None:
    """The compile-only report for this device's architecture (sm_90 stand-in on a dry run), and
    each kernel that ran in the other parts against it: same shared memory, fits, no spills."""
    if run.dry_run:
        arch, head_dims, kernel_names = "sm_90", (16,), ["cross_entropy_scale_rows"]
    else:
        major, minor = torch.cuda.get_device_capability()
        arch, head_dims, kernel_names = f"sm_{major}{minor}", run.sizes.attention[3], []
    if arch not in resources.SHARED_LIMITS:
        raise ValueError(
            f"no compile-only limits for {arch} (known: {sorted(resources.SHARED_LIMITS)})"
        )
    job_list = [
        job for job in resources.jobs([arch], ["bf16"], kernel_names)
        if job.head_dim is None or job.head_dim in head_dims
    ]  # fmt: skip
    records = resources.compile_report(job_list, processes=min(os.cpu_count() or 1, len(job_list)))
    ran, unread = [], {}
    for part in ("attention", "linear_cross_entropy", "cross_entropy_bandwidth"):
        path = run.out / "parts" / f"{part}.json"
        if path.exists():
            figures = json.loads(path.read_text(encoding="utf-8")).get("figures", {})
            ran += figures.get("compiled_kernels", [])
            if "compiled_kernels_error" in figures:
                unread[part] = figures["compiled_kernels_error"]
    if unread:
        run.figures["compiled_kernels_errors"] = unread
    predicted: dict[tuple, set[int]] = {}
    for job, record in zip(job_list, records):
        key = (job.fn_name, job.num_warps, job.num_stages)
        predicted.setdefault(key, set()).add(record["shared_bytes"])
    comparison = []
    for kernel in ran:
        shared = predicted.get((kernel["fn"], kernel["num_warps"], kernel["num_stages"]), set())
        fits = kernel["shared_bytes"] <= resources.SHARED_LIMITS[arch] and not kernel["spills"]
        comparison.append({**kernel, "predicted_shared": sorted(shared),
                           "agrees": kernel["shared_bytes"] in shared and fits})  # fmt: skip
    unfit = [list(group) for group in resources.unfit_groups(records)]
    run.figures.update(arch=arch, compiled=len(records), unfit_groups=unfit, ran=comparison)
    # a kernel that disagrees with the report, or a group the report finds no fitting candidate for
    run.check(
        "compile_report_mismatches", float(sum(not c["agrees"] for c in comparison) + len(unfit))
    )
    if not run.dry_run and not comparison:  # no kernel ran in the other parts: nothing confirmed
        run.checks[-1]["passed"] = False


PART_FUNCTIONS = {
    "gpu_tests": part_gpu_tests,
    "attention": part_attention,
    "linear_cross_entropy": part_linear_cross_entropy,
    "cross_entropy_bandwidth": part_cross_entropy_bandwidth,
    "model": part_model,
    "compile_report": part_compile_report,
}


def _device(dry_run: bool) -> torch.device:
    return torch.device("cpu" if dry_run else "cuda")


def _dtype(dry_run: bool) -> torch.dtype:
    return torch.float32 if dry_run else torch.bfloat16


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


def main(argv: list[str] | None = None) -> int:
    """The command line; 0 when everything ran and passed (a dry run: when every part ran)."""
    parser = argparse.ArgumentParser(prog="python -m smallgpt.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="folder for the two reports")
    parser.add_argument("--dry-run", action="store_true", help="CPU, interpreter, tiny shapes")
    parser.add_argument("--tests", default="tests", help="where the gpu-marked tests are")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # one child's part
    args = parser.parse_args(argv)
    if args.part:
        return 0 if run_part(args.part, args.out, args.dry_run, args.tests)["status"] == "ok" else 1
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device here; use --dry-run to run the pipeline on the CPU",
              file=sys.stderr)  # fmt: skip
        return 2
    report = run_all(args.out, args.dry_run, args.tests)
    print((args.out / "gpu_check.md").read_text(encoding="utf-8"))
    return 0 if report["passed"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
