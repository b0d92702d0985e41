"""Whether the Triton kernels can run on a device, and the launch settings they share.

Triton decides at `@triton.jit` time (that is, when a kernel module is first imported) whether kernels
are compiled for the GPU or run by its CPU interpreter (`TRITON_INTERPRET=1`), so the kernel modules
are imported only when a kernel is first launched, never by `import smallgpt.kernels`.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

# tl.dot needs at least 16 along every dimension; 128 is the widest head the tile sizes fit.
SUPPORTED_HEAD_DIMS: tuple[int, ...] = (16, 32, 64, 128)
KERNEL_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)
# CUDA limits a grid's second axis, which the attention kernels use for (batch, head) pairs.
MAX_BATCH_HEADS = 65535


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (environment `TRITON_INTERPRET=1`)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def triton_importable() -> bool:
    """True when the `triton` package is installed (torch wheels for Linux + CUDA ship it)."""
    return importlib.util.find_spec("triton") is not None


def is_available(device: torch.device | str) -> bool:
    """Whether the smallgpt Triton kernels can run on `device`.

    True for a CUDA device of compute capability 8.0 or newer (bf16 tensor cores) when triton is
    importable; True for the CPU only under the Triton interpreter (`TRITON_INTERPRET=1`, slow, for
    tests); False otherwise. Never raises for a well-formed device; raises RuntimeError for a
    malformed device string (from `torch.device`).
    """
    device = torch.device(device)
    if not triton_importable():
        return False
    if device.type == "cpu":
        return interpreting()
    if device.type != "cuda" or not torch.cuda.is_available() or torch.version.hip is not None:
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index) >= (8, 0)


def dot_precision(dtype: torch.dtype) -> str:
    """`tl.dot` input precision for float32 operands, following torch's own matmul setting.

    With the default `torch.set_float32_matmul_precision("highest")` fp32 products are exact
    ("ieee"), otherwise TF32 tensor cores are allowed like cuBLAS would; 16-bit operands ignore it.
    """
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def require_available(device: torch.device, what: str) -> None:
    """Raise RuntimeError naming `what` when the kernels cannot run on `device`.

    Skipped while torch.compile traces (the device queries would break the graph); there the
    kernel launch itself fails on an unusable device.
    """
    if torch.compiler.is_compiling():
        return
    if not is_available(device):
        raise RuntimeError(
            f"{what} needs a CUDA device (compute capability >= 8.0) with triton installed, or "
            f"TRITON_INTERPRET=1 to run on the CPU; got device {device}. "
            f"Check smallgpt.kernels.is_available(device) and fall back to PyTorch otherwise."
        )


def unit_last_stride(t: torch.Tensor) -> torch.Tensor:
    """`t` itself when its last axis is contiguous (what the kernels address), else a copy."""
    return t if t.stride(-1) == 1 else t.contiguous()
