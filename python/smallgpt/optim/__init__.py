"""Optimizers (AdamW, Muon) and the learning-rate schedule."""

from smallgpt.optim.optimizers import (
    MUON_MOMENTUM,
    Fp32Muon,
    MuonWithAdamW,
    build_optimizer,
    has_native_bf16,
    is_muon_matrix,
    orthogonalize,
)
from smallgpt.optim.schedule import (
    cosine_with_warmup_factor,
    get_cosine_schedule_with_warmup,
)

__all__ = [
    "MUON_MOMENTUM",
    "Fp32Muon",
    "MuonWithAdamW",
    "build_optimizer",
    "cosine_with_warmup_factor",
    "get_cosine_schedule_with_warmup",
    "has_native_bf16",
    "is_muon_matrix",
    "orthogonalize",
]
