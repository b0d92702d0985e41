"""`ModelConfig` (defined once, as the config's `model` section), the label that marks an unscored
target, and which head sizes the attention kernels take."""

from __future__ import annotations

from smallgpt.config.schema import ModelConfig
from smallgpt.kernels._support import SUPPORTED_HEAD_DIMS

__all__ = ["IGNORE_INDEX", "ModelConfig", "check_kernel_support"]

IGNORE_INDEX = -100


def _flash_head_dims() -> tuple[int, ...]:
    return SUPPORTED_HEAD_DIMS


def check_kernel_support(config: ModelConfig) -> None:
    """Raise ValueError when attention='triton' asks for a head size the kernels lack."""
    if config.attention == "triton" and config.head_dim not in _flash_head_dims():
        raise ValueError(
            f"attention='triton' supports head_dim (embed_dim / num_heads) in "
            f"{_flash_head_dims()}, got {config.head_dim}; use attention='sdpa' or 'auto'"
        )
