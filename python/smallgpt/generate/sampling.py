"""Choosing the next token: temperature, top-k, top-p, min-p and repetition penalty."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _check_logits(logits: Tensor) -> Tensor:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point torch.Tensor")
    if logits.dim() not in (1, 2) or logits.size(-1) == 0:
        raise ValueError(
            f"logits must have shape (vocab,) or (batch, vocab), got {tuple(logits.shape)}"
        )
    return logits.float() if logits.element_size() < 4 else logits


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """A copy of `logits` with everything but the k largest per row set to -inf (exactly k kept)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be a positive integer, got {k!r}")
    logits = _check_logits(logits)
    if k >= logits.size(-1):
        return logits.clone()
    values, indices = logits.topk(k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, indices, values)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """A copy of `logits` keeping the nucleus: the most likely tokens whose probabilities sum to p.

    A token is kept when the probability mass of the tokens ranked above it is below p, so the
    best token is always kept. p must be in (0, 1]; p = 1 keeps everything.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p!r}")
    logits = _check_logits(logits)
    if p >= 1.0:
        return logits.clone()
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs
    drop = (mass_above >= p).scatter(-1, order, mass_above >= p)
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits: Tensor, min_p: float) -> Tensor:
    """A copy of `logits` keeping tokens whose probability is at least min_p x the best one's."""
    if not 0.0 <= min_p <= 1.0:
        raise ValueError(f"min_p must be in [0, 1], got {min_p!r}")
    logits = _check_logits(logits)
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < threshold, float("-inf"))


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """A copy of `logits` (batch, vocab) where tokens marked in `seen` (bool, same shape) are made
    less likely (CTRL rule: positive logits divided by penalty, negative ones multiplied)."""
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty!r}")
    logits = _check_logits(logits)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def sample_next_token(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    generator: torch.Generator | Sequence[torch.Generator | None] | None = None,
) -> Tensor:
    """Sample one id per row of `logits` (vocab,) or (batch, vocab): LongTensor (..., 1).

    temperature 0 is greedy (argmax); otherwise logits are divided by temperature, then filtered
    by top_k, top_p and min_p (those given), and sampled with `generator`: one for every row, or
    a list of one per row of 2-D logits (None: the global RNG), so a row with its own generator
    draws what it would draw alone. Raises ValueError for a negative temperature, out-of-range
    filter values, a generator list of the wrong length, or logits that give no distribution
    (NaN, or a row all -inf).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    logits = _check_logits(logits)
    per_row = generator is not None and not isinstance(generator, torch.Generator)
    if per_row and (logits.dim() != 2 or len(generator) != logits.size(0)):
        raise ValueError(
            f"a list of generators needs one per row of 2-D logits, got {len(generator)} for "
            f"logits of shape {tuple(logits.shape)}"
        )
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    if min_p is not None:
        logits = min_p_filter(logits, min_p)
    probs = logits.softmax(dim=-1)
    if bool(probs.isnan().any()):
        raise ValueError("the logits give no distribution to sample (NaN, or a row all -inf)")
    # The exponential race: with q_i = -log(u_i) ~ Exp(1) drawn independently, argmax(p_i / q_i)
    # is id i with probability p_i. Each row's uniforms can come from its own generator, so rows
    # are sampled together yet each as if alone (uniform_ then log is ~4x cheaper than
    # exponential_; u = 0 makes q infinite, which only sits that id out of a 2**-24 chance).
    noise = torch.empty_like(probs)
    if per_row:
        for row, row_generator in zip(noise, generator):
            row.uniform_(generator=row_generator)
    else:
        noise.uniform_(generator=generator)
    return (probs / noise.log_().neg_()).argmax(dim=-1, keepdim=True)


def top_k_sampling(
    logits: Tensor, k: int = 50, *, generator: torch.Generator | None = None
) -> Tensor:
    """Sample from the k most likely tokens of each row: LongTensor (..., 1). Logits untouched."""
    return sample_next_token(logits, top_k=k, generator=generator)


def top_p_sampling(
    logits: Tensor, p: float = 0.9, *, generator: torch.Generator | None = None
) -> Tensor:
    """Sample from the nucleus of mass p of each row: LongTensor (..., 1). Logits untouched."""
    return sample_next_token(logits, top_p=p, generator=generator)
