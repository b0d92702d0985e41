"""Device and numeric precision for a training run: where tensors live and how matmuls are done."""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import torch

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """The device and precision chosen for a run.

    precision "fp32": plain float32 (TF32 matmuls on CUDA); "bf16": bfloat16 autocast; "fp16":
    float16 autocast with a gradient scaler (older GPUs without bf16).
    """

    device: torch.device
    precision: str

    @property
    def autocast(self) -> Callable[[], AbstractContextManager]:
        """A factory of the autocast context for forward passes (a no-op for fp32)."""
        dtype = _AUTOCAST_DTYPES.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext
        return lambda: torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16 (None otherwise: bf16 and fp32 need no loss scaling)."""
        if self.precision != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16), read from
    /proc/cpuinfo (False where that file does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_runtime(
    device: str, precision: str, local_rank: int = 0, num_threads: int | None = None
) -> Runtime:
    """Pick the device ("auto": this rank's GPU if CUDA is available, else CPU) and precision
    ("auto": bf16 on GPUs that support it, fp16 on older GPUs; on a CPU bf16 where
    `cpu_has_native_bf16()`, several times faster than fp32 there, else fp32); turn TF32 on;
    set torch's CPU thread count when `num_threads` is given.

    An explicit bf16 on a CPU without bf16 instructions is kept but noted on stderr: torch then
    emulates bf16 matmuls, about 100x slower than fp32. Raises ValueError when CUDA is requested
    but absent, or fp16 is requested on CPU.
    """
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        device = f"cuda:{local_rank}"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={device!r} but CUDA is not available; use auto or cpu")
    native_cpu_bf16 = resolved.type == "cpu" and cpu_has_native_bf16()
    if precision == "auto":
        if resolved.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if native_cpu_bf16 else "fp32"
    elif precision == "bf16" and resolved.type == "cpu" and not native_cpu_bf16 and local_rank == 0:
        print(
            "note: train.precision=bf16 on a CPU without bf16 matrix instructions (AVX512-BF16 or "
            "AMX): torch emulates them, about 100x slower than fp32; train.precision=auto picks "
            "fp32 here",
            file=sys.stderr,
        )
    if precision == "fp16" and resolved.type != "cuda":
        raise ValueError("train.precision=fp16 needs a CUDA device; use fp32 or bf16")
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    torch.set_float32_matmul_precision("high")
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    return Runtime(device=resolved, precision=precision)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
