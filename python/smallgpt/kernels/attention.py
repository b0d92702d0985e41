"""Fused (flash) attention in Triton, beside `attention_reference`, the plain PyTorch maths it computes.

`flash_attention(q, k, v)` returns softmax(q k^T * scale, causal mask) v, optionally with attention
dropout, without ever materialising the (seq, seq) score matrix: the forward keeps a running max and
sum per query row (online softmax) and saves only the row's log-sum-exp; the backward recomputes the
probabilities from it. The kernels sit behind the `torch.library` custom ops
`smallgpt::flash_attention` and `smallgpt::flash_attention_backward`, so `torch.compile` treats them
as opaque calls with known output shapes.

Tensors are (batch, heads, seq, head_dim), any strides (views of a fused QKV projection work without
a copy). Outputs and gradients are allocated in (batch, seq, heads, head_dim) memory order, so
`out.transpose(1, 2).reshape(batch, seq, heads * head_dim)` is free.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, TypedDict

import torch
from torch import Tensor

from smallgpt.kernels._support import (
    KERNEL_DTYPES,
    MAX_BATCH_HEADS,
    SUPPORTED_HEAD_DIMS,
    is_available,
    require_available,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack needs Python 3.11

__all__ = [
    "AttentionOptions",
    "attention_dropout_mask",
    "attention_reference",
    "flash_attention",
    "is_available",
]

_SEED_LIMIT = 2**62


class AttentionOptions(TypedDict, total=False):
    """The options `flash_attention` and `attention_reference` share, as keywords; a reference given
    none of them uses `flash_attention`'s defaults (causal, the 1/sqrt(head_dim) scale, no dropout)."""

    causal: bool
    softmax_scale: float | None
    dropout_p: float


def attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    dropout_mask: Tensor | None = None,
    **options: Unpack[AttentionOptions],
) -> Tensor:
    """Attention computed the textbook way, in the inputs' dtype, with a (seq, seq) score matrix.

    q, k, v: (batch, heads, seq, head_dim). `dropout_mask` (bool, broadcastable to
    (batch, heads, seq, seq), True = kept) is applied to the probabilities and survivors are scaled by
    1 / (1 - dropout_p), the same maths as `flash_attention` with that mask. Differentiable.
    """
    softmax_scale = options.get("softmax_scale")
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.transpose(-2, -1)) * scale
    if options.get("causal", True):
        seq_len = q.shape[-2]
        future = torch.ones(seq_len, seq_len, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if dropout_mask is not None:
        probs = probs * dropout_mask / (1.0 - options.get("dropout_p", 0.0))
    return probs @ v


def flash_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = True,
    softmax_scale: float | None = None,
    dropout_p: float = 0.0,
    seed: int | None = None,
) -> Tensor:
    """Fused scaled-dot-product attention; differentiable in q, k and v.

    q, k, v: (batch, heads, seq, head_dim), one dtype among fp32/fp16/bf16 (accumulation is fp32),
    head_dim in 16/32/64/128, any seq length >= 1 and any strides. `causal` masks key j > query i.
    `softmax_scale` multiplies the scores (default 1/sqrt(head_dim)). `dropout_p` drops attention
    probabilities inside the kernel; `seed` (0 <= seed < 2**62) fixes which, None draws one from
    torch's generator on q's device (so `torch.manual_seed` makes runs repeatable). The same
    (seed, shape, dropout_p) always drops the same elements: see `attention_dropout_mask`.

    Returns (batch, heads, seq, head_dim) in q's dtype, stored in (batch, seq, heads, head_dim) order.

    Raises TypeError for non-tensors or unsupported/mismatched dtypes, ValueError for bad shapes,
    head_dim, dropout_p, softmax_scale or seed, RuntimeError when the kernels cannot run on q's
    device (see `is_available`).
    """
    _check_qkv(q, k, v)
    scale = _check_scale(softmax_scale, q.shape[-1])
    _check_dropout(dropout_p)
    seed_tensor = _seed_tensor(seed, q.device) if dropout_p > 0.0 else None
    out, _ = _flash_attention_op(q, k, v, seed_tensor, causal, scale, float(dropout_p))
    return out


def attention_dropout_mask(
    batch: int, heads: int, seq_len: int, *, dropout_p: float, seed: int, device: torch.device | str
) -> Tensor:
    """The keep-mask `flash_attention(..., dropout_p=dropout_p, seed=seed)` applies, for testing.

    Returns a bool tensor (batch, heads, seq_len, seq_len), True where the probability is kept.
    Raises ValueError for a bad dropout_p, seed or size, RuntimeError when the kernels cannot run.
    """
    _check_dropout(dropout_p)
    if min(batch, heads, seq_len) < 1 or batch * heads > MAX_BATCH_HEADS:
        raise ValueError(
            f"batch, heads and seq_len must be >= 1 with batch * heads <= {MAX_BATCH_HEADS}, "
            f"got {(batch, heads, seq_len)}"
        )
    device = torch.device(device)
    require_available(device, "attention_dropout_mask")
    mask = torch.empty(batch, heads, seq_len, seq_len, dtype=torch.int8, device=device)
    _triton().dropout_mask(mask, _seed_tensor(seed, device), float(dropout_p))
    return mask.bool()


def _triton():
    from smallgpt.kernels import _attention_triton

    return _attention_triton


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(
                f"flash_attention: {name} must be a torch.Tensor, got {type(t).__name__}"
            )
    if q.dtype not in KERNEL_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(
            f"flash_attention: q, k, v must share one dtype among float32/float16/bfloat16, "
            f"got {q.dtype}, {k.dtype}, {v.dtype}"
        )
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            "flash_attention: q, k, v must have the same shape (batch, heads, seq, head_dim), got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] not in SUPPORTED_HEAD_DIMS:
        raise ValueError(
            f"flash_attention: head_dim must be one of {SUPPORTED_HEAD_DIMS}, got {q.shape[-1]}"
        )
    batch, heads, seq_len, _ = q.shape
    if batch * heads * seq_len == 0:
        raise ValueError(f"flash_attention: empty input of shape {tuple(q.shape)}")
    if batch * heads > MAX_BATCH_HEADS:
        raise ValueError(
            f"flash_attention: batch * heads = {batch * heads} exceeds {MAX_BATCH_HEADS}"
        )
    if k.device != q.device or v.device != q.device:
        raise ValueError(
            f"flash_attention: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}"
        )
    require_available(q.device, "flash_attention")


def _check_scale(softmax_scale: float | None, head_dim: int) -> float:
    if softmax_scale is None:
        return 1.0 / math.sqrt(head_dim)
    if not (math.isfinite(softmax_scale) and softmax_scale > 0):
        raise ValueError(f"softmax_scale must be a finite number > 0, got {softmax_scale}")
    return float(softmax_scale)


def _check_dropout(dropout_p: float) -> None:
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")


def _seed_tensor(seed: int | None, device: torch.device) -> Tensor:
    """The kernels read the dropout seed from device memory, so a fresh one needs no host sync."""
    if seed is None:
        return torch.randint(_SEED_LIMIT, (1,), dtype=torch.int64, device=device)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _SEED_LIMIT:
        raise ValueError(f"seed must be an int in [0, 2**62) or None, got {seed!r}")
    return torch.tensor([seed], dtype=torch.int64, device=device)


def _empty_bthd(q: Tensor) -> Tensor:
    """An uninitialised (B, H, T, D) tensor laid out as (B, T, H, D), like q in a GPT block."""
    batch, heads, seq_len, head_dim = q.shape
    return q.new_empty(batch, seq_len, heads, head_dim).transpose(1, 2)


def _one_layout(*tensors: Tensor) -> tuple[Tensor, ...]:
    """The tensors unchanged when they share strides with a unit last one (the kernels address each
    group of tensors with one stride set), else each one not yet in (B, T, H, D) order copied into it.
    """
    first = tensors[0]
    if first.stride(-1) == 1 and all(t.stride() == first.stride() for t in tensors):
        return tensors
    _, heads, seq_len, head_dim = first.shape
    bthd = (seq_len * heads * head_dim, head_dim, heads * head_dim, 1)
    return tuple(t if t.stride() == bthd else _empty_bthd(t).copy_(t) for t in tensors)


@torch.library.custom_op("smallgpt::flash_attention", mutates_args=())
def _flash_attention_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    seed: Tensor | None,
    causal: bool,
    softmax_scale: float,
    dropout_p: float,
) -> tuple[Tensor, Tensor]:
    q, k, v = _one_layout(q, k, v)
    out = _empty_bthd(q)
    lse = q.new_empty(q.shape[:3], dtype=torch.float32)
    _triton().forward(q, k, v, out, lse, seed, causal, softmax_scale, dropout_p)
    return out, lse


@_flash_attention_op.register_fake
def _flash_attention_fake(q, k, v, seed, causal, softmax_scale, dropout_p):
    return _empty_bthd(q), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("smallgpt::flash_attention_backward", mutates_args=())
def _flash_attention_backward_op(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    seed: Tensor | None,
    causal: bool,
    softmax_scale: float,
    dropout_p: float,
) -> tuple[Tensor, Tensor, Tensor]:
    dq, dk, dv = _empty_bthd(q), _empty_bthd(q), _empty_bthd(q)
    q, k, v = _one_layout(q, k, v)
    _, grad_out, out = _one_layout(dq, grad_out, out)
    _triton().backward(
        grad_out, q, k, v, out, lse, seed, causal, softmax_scale, dropout_p, dq, dk, dv
    )
    return dq, dk, dv


@_flash_attention_backward_op.register_fake
def _flash_attention_backward_fake(
    grad_out, q, k, v, out, lse, seed, causal, softmax_scale, dropout_p
):
    return _empty_bthd(q), _empty_bthd(q), _empty_bthd(q)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, seed, causal, softmax_scale, dropout_p = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, seed)
    ctx.causal, ctx.softmax_scale, ctx.dropout_p = causal, softmax_scale, dropout_p


def _backward(ctx, grad_out: Tensor, _grad_lse: Tensor):
    q, k, v, out, lse, seed = ctx.saved_tensors
    dq, dk, dv = _flash_attention_backward_op(
        grad_out, q, k, v, out, lse, seed, ctx.causal, ctx.softmax_scale, ctx.dropout_p
    )
    return dq, dk, dv, None, None, None, None


_flash_attention_op.register_autograd(_backward, setup_context=_setup_context)
