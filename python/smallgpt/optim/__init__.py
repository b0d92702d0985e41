"""Optimizers (AdamW, Muon) and the learning-rate schedule."""

from smallgpt.optim.optimizers import (
    MUON_MOMENTUM,
    MuonWithAdamW,
    build_optimizer,
    is_muon_matrix,
)
from smallgpt.optim.schedule import (
    cosine_with_warmup_factor,
    get_cosine_schedule_with_warmup,
)

__all__ = [
    "MUON_MOMENTUM",
    "MuonWithAdamW",
    "build_optimizer",
    "cosine_with_warmup_factor",
    "get_cosine_schedule_with_warmup",
    "is_muon_matrix",
]
