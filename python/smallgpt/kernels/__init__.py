"""Triton kernels, shipped inside the wheel as ``smallgpt.kernels``.

- `attention.flash_attention`: fused causal attention (forward + backward, in-kernel dropout).
- `cross_entropy.cross_entropy` / `cross_entropy.linear_cross_entropy`: fused losses.
- `fallback.kernel_passes_probe` / `drain_fallbacks`: the first-use check and the kernels that fell
  back to PyTorch after failing it.
- `is_available(device)`: whether the kernels can run there (CUDA + triton, or TRITON_INTERPRET=1).

Importing this package does not import triton; the kernels are compiled on first use.
"""

from smallgpt.kernels._support import is_available
from smallgpt.kernels.attention import attention_reference, flash_attention
from smallgpt.kernels.cross_entropy import cross_entropy, linear_cross_entropy
from smallgpt.kernels.fallback import KernelFallback, drain_fallbacks, kernel_passes_probe

__all__ = [
    "KernelFallback",
    "attention_reference",
    "cross_entropy",
    "drain_fallbacks",
    "flash_attention",
    "is_available",
    "kernel_passes_probe",
    "linear_cross_entropy",
]
