"""The six parts of the GPU check; each fills its `PartRun` and runs in its own child process."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from smallgpt.config.loader import load_config
from smallgpt.evaluate.metrics import model_flops_utilization, peak_flops
from smallgpt.gpu_check.measure import (
    median_seconds,
    part_device,
    part_dtype,
    peak_bandwidth,
    peak_bytes,
    record_compiled_kernels,
    sync,
)
from smallgpt.gpu_check.plan import BUDGET_S, PartRun, Sizes
from smallgpt.kernels import resources
from smallgpt.kernels.attention import flash_attention
from smallgpt.kernels.cross_entropy import cross_entropy, linear_cross_entropy
from smallgpt.model.config import ModelConfig
from smallgpt.model.gpt import SmallGPT


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
    sizes, device, dtype = run.sizes, part_device(run.dry_run), part_dtype(run.dry_run)
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


def part_linear_cross_entropy(run: PartRun) -> None:
    """Peak memory and forward+backward time: fused, naive (`F.cross_entropy(h @ W.T)`), Liger."""
    sizes, device, dtype = run.sizes, part_device(run.dry_run), part_dtype(run.dry_run)
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
            peak = peak_bytes(lambda fn=loss_fn: step(fn), device)
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
    sizes, device, dtype = run.sizes, part_device(run.dry_run), part_dtype(run.dry_run)
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
    sizes, device = run.sizes, part_device(run.dry_run)
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
    sync(device)
    start = time.perf_counter()
    for _ in range(sizes.model_steps):
        step()
    sync(device)
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
