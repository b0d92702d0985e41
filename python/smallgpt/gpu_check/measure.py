"""Measuring on the device: timing, peak memory, the device's peak bandwidth, and which Triton
kernels this process compiled."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import triton
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction

from smallgpt.gpu_check.plan import Sizes
from smallgpt.kernels import _attention_triton, _cross_entropy_triton

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


def peak_bandwidth(device: torch.device) -> float | None:
    """Peak DRAM bandwidth of `device` in bytes/s, or None (CPU, or a GPU not in the table)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbs * 1e9 for key, gbs in _PEAK_BANDWIDTH_GBS if key in name), None)


def part_device(dry_run: bool) -> torch.device:
    """Where the parts run: the CPU on a dry run, else the CUDA device."""
    return torch.device("cpu" if dry_run else "cuda")


def part_dtype(dry_run: bool) -> torch.dtype:
    """The parts' data type: float32 on a dry run (the interpreter), else bfloat16."""
    return torch.float32 if dry_run else torch.bfloat16


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, sizes: Sizes) -> float:
    """Median wall time of `fn` in seconds over `sizes.iters` calls after `sizes.warmup` calls."""
    for _ in range(sizes.warmup):
        fn()
    times = []
    for _ in range(sizes.iters):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
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
