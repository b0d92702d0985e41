"""oneDNN's fp32 matrix product for decoding on CPU.

A decoding step multiplies a few rows (one per sequence) by every weight matrix, so its speed
is how fast the product streams the weights from memory. For such products torch's `F.linear`
calls the BLAS it was built with (MKL on x86), whose path for a row times a transposed matrix
ran at 12 GB/s on one thread on an AMD EPYC (Zen 4) whatever the thread count, while oneDNN's
linear (`torch.ops.mkldnn._linear_pointwise`, the op torch's own CPU compiler emits) used both
threads at 24 GB/s: the 25M model's products for one token 7.6 -> 3.7 ms, its output layer 1.4
-> 0.26 ms (benches/RESULTS.md, session 11). The op has no gradient, so it is used only where
autograd is off, and only once it has given `F.linear`'s result on this machine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LinearCall = Callable[[nn.Module, Tensor], Tensor]


def _onednn(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """`F.linear(x, weight, bias)` computed by oneDNN (no gradient)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def call_layer(layer: nn.Module, x: Tensor) -> Tensor:
    """`layer(x)`: the product decoding uses where oneDNN's does not apply."""
    return layer(x)


def onednn_linear(layer: nn.Module, x: Tensor) -> Tensor:
    """`layer(x)` through oneDNN's linear for an fp32 `nn.Linear` (autograd off); other layers
    (the int8 ones of an inference model, say) are called as they are."""
    if isinstance(layer, nn.Linear) and layer.weight.dtype == torch.float32:
        return _onednn(x, layer.weight, layer.bias)
    return layer(x)


def onednn_product(x: Tensor, weight: Tensor) -> Tensor:
    """`F.linear(x, weight)` for an fp32 CPU `weight`: through oneDNN's linear where `x` is fp32
    too and autograd is off, else `F.linear` itself."""
    if x.dtype == torch.float32 and not torch.is_grad_enabled():
        return _onednn(x, weight, None)
    return F.linear(x, weight)


@functools.cache
def onednn_linear_works() -> bool:
    """Whether this torch has oneDNN's linear and it gives `F.linear`'s result here (checked
    once per process on a small product, so a build without it, or one where it misbehaves,
    keeps `F.linear`)."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 64, generator=generator)
    weight = torch.randn(48, 64, generator=generator)
    bias = torch.randn(48, generator=generator)
    try:
        with torch.inference_mode():
            got = _onednn(x, weight, bias)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    expected = F.linear(x, weight, bias)
    # Both sum 64 products of unit-scale values; they differ only in rounding.
    return got.shape == expected.shape and bool(torch.allclose(got, expected, rtol=0, atol=1e-4))


def decoding_linear(x: Tensor) -> LinearCall:
    """How a decoding step over activations `x` multiplies by its layers: oneDNN's linear for
    fp32 on CPU with autograd off where it works, else the layer's own call."""
    if (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and onednn_linear_works()
    ):
        return onednn_linear
    return call_layer
