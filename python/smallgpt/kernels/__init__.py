"""Triton kernels, shipped inside the wheel as ``smallgpt.kernels``.

- `attention.flash_attention`: fused causal attention (forward + backward, in-kernel dropout).
- `cross_entropy.cross_entropy` / `cross_entropy.linear_cross_entropy`: fused losses.
- `is_available(device)`: whether the kernels can run there (CUDA + triton, or TRITON_INTERPRET=1).

Importing this package does not import triton; the kernels are compiled on first use.
"""

from smallgpt.kernels._support import is_available
from smallgpt.kernels.attention import attention_reference, flash_attention
from smallgpt.kernels.cross_entropy import cross_entropy, linear_cross_entropy

__all__ = [
    "attention_reference",
    "cross_entropy",
    "flash_attention",
    "is_available",
    "linear_cross_entropy",
]
