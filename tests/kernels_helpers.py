"""What the kernel tests share: where they run, their skip marks, and their accuracy criterion.

The kernel tests run on CUDA when there is a GPU, otherwise on the CPU under the Triton interpreter.
Triton chooses interpreter or compiler when it is imported, so `TRITON_INTERPRET=1` cannot be set
for some tests of a session only: tests/test_kernels_interpreter.py re-runs the kernel test modules
in a child pytest with that variable set, and in a session without it (and without CUDA) the
modules skip their tests, leaving torch/triton untouched for every other test module.
"""

from __future__ import annotations

import math

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


# Error allowed on top of twice torch's own error, relative to the magnitude of the computation's inputs.
_FLOOR = {torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def assert_within_torch_error(
    name: str,
    ours: torch.Tensor,
    theirs: torch.Tensor,
    exact: torch.Tensor,
    dtype: torch.dtype,
    *,
    scale: float,
) -> None:
    """Our max error against the fp64 `exact` is at most 2x torch's (`theirs`) plus a small floor.

    `dtype` is the precision the computation ran in. The floor is `_FLOOR[dtype] * scale`, where
    `scale` bounds the magnitude of the terms the output is computed from (a product of the inputs'
    largest magnitudes, see `attention_scales` and `cross_entropy_scales`): an output that is exactly
    zero (one key, an ignored target) still allows the rounding of the terms that cancelled, and
    torch happening to round to an exact zero on one CPU does not make the test depend on that CPU.
    """
    assert ours.shape == exact.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(exact.shape)}"
    assert scale > 0, f"{name}: the input scale must be positive, got {scale}"
    exact = exact.double()
    ours_err = (ours.double() - exact).abs().max().item()
    torch_err = (theirs.double() - exact).abs().max().item()
    floor = _FLOOR[dtype] * scale
    assert ours_err <= 2 * torch_err + floor, (
        f"{name}: error {ours_err:.3g} exceeds 2 x torch's {torch_err:.3g} + floor {floor:.3g}"
    )


def _largest(t: torch.Tensor) -> float:
    return t.detach().abs().max().item() if t.numel() else 0.0


def attention_scales(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grad_out: torch.Tensor,
    *,
    softmax_scale: float,
    dropout_p: float = 0.0,
) -> dict[str, float]:
    """Input magnitudes each attention output is built from, keyed "out", "dq", "dk", "dv".

    out = P V and dV = P^T dO mix rows of V and dO with weights at most 1 (1 / (1 - p) kept under
    dropout); dQ = scale * (P * (dO V^T - delta)) K and dK alike with Q, so their terms are bounded by
    scale * |dO| |V| |K| (|Q|).
    """
    keep = 1.0 / (1.0 - dropout_p)
    mq, mk, mv, mo = (_largest(t) for t in (q, k, v, grad_out))
    return {
        "out": keep * mv,
        "dv": keep * mo,
        "dq": keep * softmax_scale * mo * mv * mk,
        "dk": keep * softmax_scale * mo * mv * mq,
    }


def cross_entropy_scales(
    logits_bound: float, vocab: int, upstream: torch.Tensor, *, scored: int, reduction: str
) -> tuple[float, float]:
    """Input magnitudes of cross-entropy's loss and of its logits gradient.

    A row's loss is logsumexp(x) - x_target, terms of at most `logits_bound` + ln(vocab), and "sum"
    adds the `scored` (not ignored) rows. A logit's gradient is upstream * (softmax - target), each
    factor at most 1 but the upstream's, divided by the `scored` rows for "mean".
    """
    rows = max(scored, 1)
    loss = (logits_bound + math.log(vocab)) * (rows if reduction == "sum" else 1)
    grad = _largest(upstream) / (rows if reduction == "mean" else 1)
    return loss, grad


def randn(*shape: int, seed: int, dtype: torch.dtype, device: str = KERNEL_DEVICE) -> torch.Tensor:
    """Standard normal values drawn on the CPU (the same on every machine), then moved."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
