"""What the kernel tests share: where they run, their skip marks, and their accuracy criterion.

The kernel tests run on CUDA when there is a GPU, otherwise on the CPU under the Triton interpreter.
Triton chooses interpreter or compiler when it is imported, so `TRITON_INTERPRET=1` cannot be set
for some tests of a session only: tests/test_kernels_interpreter.py re-runs the kernel test modules
in a child pytest with that variable set, and in a session without it (and without CUDA) the
modules skip their tests, leaving torch/triton untouched for every other test module.
"""

from __future__ import annotations

import pytest
import torch
from smallgpt.kernels import is_available

KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

needs_kernels = pytest.mark.skipif(
    not is_available(KERNEL_DEVICE),
    reason="needs CUDA, or TRITON_INTERPRET=1 on the CPU (tests/test_kernels_interpreter.py "
    "runs this module that way)",
)


def gpu(test):
    """Mark `test` as a GPU test; it skips (with the reason) where there is no CUDA device."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    return pytest.mark.gpu(skip(test))


# Error allowed on top of twice torch's own error, relative to the exact values' largest magnitude.
_FLOOR = {torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def assert_within_torch_error(
    name: str, ours: torch.Tensor, theirs: torch.Tensor, exact: torch.Tensor, dtype: torch.dtype
) -> None:
    """Our max error against the fp64 `exact` is at most 2x torch's (`theirs`) plus a small floor.

    `dtype` is the precision the computation ran in; the floor scales with max |exact|.
    """
    assert ours.shape == exact.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(exact.shape)}"
    exact = exact.double()
    ours_err = (ours.double() - exact).abs().max().item()
    torch_err = (theirs.double() - exact).abs().max().item()
    floor = _FLOOR[dtype] * exact.abs().max().item()
    assert ours_err <= 2 * torch_err + floor, (
        f"{name}: error {ours_err:.3g} exceeds 2 x torch's {torch_err:.3g} + floor {floor:.3g}"
    )


def randn(*shape: int, seed: int, dtype: torch.dtype, device: str = KERNEL_DEVICE) -> torch.Tensor:
    """Standard normal values drawn on the CPU (the same on every machine), then moved."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
