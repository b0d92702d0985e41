"""A probe before a kernel's first use, and the record of kernels that fell back to PyTorch.

`kernel_passes_probe` runs a kernel once, forward and backward, on a small input and compares it
with its PyTorch reference; a kernel that raises (compile error, `OutOfResources`, CUDA error) or
disagrees beyond the tolerance is reported once as a `KernelFallback` and the caller uses PyTorch for
that configuration for the rest of the process. The events wait in a module-level queue until
`drain_fallbacks` takes them (the trainer does after each step and reports them as warnings), so the
model layer never needs the training layer to say what happened.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from smallgpt.kernels.attention import attention_dropout_mask, attention_reference, flash_attention
from smallgpt.kernels.cross_entropy import linear_cross_entropy, linear_cross_entropy_reference

__all__ = ["KernelFallback", "drain_fallbacks", "kernel_passes_probe"]

# Largest tolerated |kernel - reference| relative to the reference's largest magnitude (never zero
# for the probe's random inputs); wide enough for TF32 and 16-bit rounding, far below the errors of
# order 1 that a wrong kernel gives.
_TOLERANCE = {torch.float32: 1e-2, torch.float16: 1e-2, torch.bfloat16: 5e-2}
_PROBE_DROPOUT = 0.25
_PROBE_SEED = 1234

_pending: list[KernelFallback] = []
_lock = threading.Lock()


@dataclass(frozen=True)
class KernelFallback:
    """A kernel that failed its probe: which, for which configuration, why, and how to force it."""

    kernel: str
    configuration: str
    reason: str
    setting: str

    @property
    def message(self) -> str:
        """One line for the console and the run's logs."""
        return (
            f"Triton kernel {self.kernel} failed its first-use check on {self.configuration} "
            f"({self.reason}); using PyTorch there for the rest of this run. {self.setting}"
        )


def drain_fallbacks() -> list[KernelFallback]:
    """The fallbacks recorded since the last call (oldest first); the queue is left empty."""
    with _lock:
        events = list(_pending)
        _pending.clear()
    return events


@torch._dynamo.assume_constant_result
@functools.cache
def kernel_passes_probe(
    kernel: str, device: str, dtype: torch.dtype, head_dim: int = 0, dropout: bool = False
) -> bool:
    """Whether `kernel` ("flash_attention" or "linear_cross_entropy") runs correctly on `device`.

    Probed once per (kernel, device, dtype, head_dim, dropout) in this process; under torch.compile
    the probe runs eagerly while tracing and its answer is a constant of the graph. A failure is
    recorded for `drain_fallbacks` and False is returned: the caller uses PyTorch instead. Raises
    ValueError for an unknown kernel name.
    """
    if kernel not in _PROBES:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {sorted(_PROBES)}")
    probe, setting = _PROBES[kernel]
    configuration = f"{device} {str(dtype).removeprefix('torch.')}"
    if kernel == "flash_attention":
        configuration += f" head_dim={head_dim} dropout={'on' if dropout else 'off'}"
    try:
        with torch.enable_grad(), torch.autocast(torch.device(device).type, enabled=False):
            error = probe(torch.device(device), dtype, head_dim, dropout)
        reason = (
            None if error <= _TOLERANCE[dtype] else f"relative error {error:.3g} vs its reference"
        )
    except Exception as exc:  # noqa: BLE001 - any failure of an untested kernel: the run goes on
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        reason = f"{type(exc).__name__}: {first_line}"
    if reason is None:
        return True
    with _lock:
        _pending.append(KernelFallback(kernel, configuration, reason, setting))
    return False


def _inputs(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Random inputs from a private generator: the probe leaves torch's global RNG untouched."""
    t = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    return t.requires_grad_()


def _relative_error(got: Tensor, want: Tensor) -> float:
    got, want = got.detach().float(), want.detach().float()
    error = float((got - want).abs().max()) / max(float(want.abs().max()), 1e-6)
    return error if math.isfinite(error) else math.inf


def _worst(pairs: list[tuple[Tensor, Tensor]]) -> float:
    return max(_relative_error(got, want) for got, want in pairs)


def _probe_attention(
    device: torch.device, dtype: torch.dtype, head_dim: int, dropout: bool
) -> float:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (_inputs((1, 2, 48, head_dim), generator, device, dtype) for _ in range(3))
    p = _PROBE_DROPOUT if dropout else 0.0
    out = flash_attention(q, k, v, causal=True, dropout_p=p, seed=_PROBE_SEED)
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    fp32 = [t.detach().float().requires_grad_() for t in (q, k, v)]
    mask = (
        attention_dropout_mask(1, 2, 48, dropout_p=p, seed=_PROBE_SEED, device=device)
        if dropout
        else None
    )
    want = attention_reference(*fp32, causal=True, dropout_p=p, dropout_mask=mask)
    want_grads = torch.autograd.grad(want, fp32, torch.ones_like(want))
    return _worst([(out, want), *zip(grads, want_grads, strict=True)])


def _probe_linear_cross_entropy(
    device: torch.device, dtype: torch.dtype, _head_dim: int, _dropout: bool
) -> float:
    generator = torch.Generator().manual_seed(0)
    hidden = _inputs((24, 32), generator, device, dtype)
    weight = _inputs((80, 32), generator, device, dtype)
    targets = torch.randint(0, 72, (24,), generator=generator).to(device)
    targets[3] = -100
    loss = linear_cross_entropy(hidden, weight, targets, vocab_size=72)
    grads = torch.autograd.grad(loss, (hidden, weight))
    fp32 = [t.detach().float().requires_grad_() for t in (hidden, weight)]
    want = linear_cross_entropy_reference(*fp32, targets, vocab_size=72)
    want_grads = torch.autograd.grad(want, fp32)
    return _worst([(loss, want), *zip(grads, want_grads, strict=True)])


_PROBES: dict[str, tuple[Callable[..., float], str]] = {
    "flash_attention": (
        _probe_attention,
        "Set model.attention=triton to use the kernel anyway (it then raises where it fails).",
    ),
    "linear_cross_entropy": (
        _probe_linear_cross_entropy,
        (
            "No setting forces the fused loss; call smallgpt.kernels.linear_cross_entropy "
            "directly to see the failure."
        ),
    ),
}
