"""Fused cross-entropy in Triton, and the LM head fused with it, beside their PyTorch references.

`cross_entropy` computes each row's loss with an online softmax and writes the gradient in the same
kernel, so the backward only multiplies it by the incoming gradient. `linear_cross_entropy` computes
`cross_entropy(hidden @ weight.T, targets)` a chunk of tokens at a time: the chunk's logits are
overwritten in place by their gradient, which is folded straight into the hidden and weight gradients
(the weight's accumulated in fp32), so the full (tokens, vocab) logits never exist.

Both losses are returned in float32 (PyTorch's autocast also computes cross-entropy in float32) and
both follow `torch.nn.functional.cross_entropy`: "mean" averages over non-ignored targets (NaN when
there are none), "none" gives 0 for ignored targets. `vocab_size` lets the logits carry padding
columns (a vocabulary padded to a multiple of 64 for fast matmuls): columns >= vocab_size never enter
the softmax, get zero gradient, and label smoothing spreads over the real vocabulary only. A target
outside [0, vocab_size) that is not ignore_index gives a NaN loss (checking on the host would cost a
device synchronisation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor

from smallgpt.kernels._support import (
    KERNEL_DTYPES,
    is_available,
    require_available,
    unit_last_stride,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack needs Python 3.11

__all__ = [
    "LossOptions",
    "cross_entropy",
    "cross_entropy_reference",
    "is_available",
    "linear_cross_entropy",
    "linear_cross_entropy_reference",
]

_REDUCTIONS = ("mean", "sum", "none")
# Default chunk: as many tokens as keep one chunk's logits within this many bytes.
_CHUNK_BYTES = 32 * 2**20


class LossOptions(TypedDict, total=False):
    """The loss options of `cross_entropy` and `linear_cross_entropy`, as keywords; a reference
    given none of them uses those functions' defaults (-100, "mean", 0.0, None)."""

    ignore_index: int
    reduction: str
    label_smoothing: float
    vocab_size: int | None


def cross_entropy_reference(
    logits: Tensor, targets: Tensor, **options: Unpack[LossOptions]
) -> Tensor:
    """`F.cross_entropy` on the first `vocab_size` columns, in float32: the maths `cross_entropy` does."""
    vocab_size = options.get("vocab_size")
    if vocab_size is not None:
        logits = logits[:, :vocab_size]
    return F.cross_entropy(
        logits.float(),
        targets,
        ignore_index=options.get("ignore_index", -100),
        reduction=options.get("reduction", "mean"),
        label_smoothing=options.get("label_smoothing", 0.0),
    )


def linear_cross_entropy_reference(
    hidden: Tensor, weight: Tensor, targets: Tensor, **options: Unpack[LossOptions]
) -> Tensor:
    """The unfused LM head + loss: `cross_entropy_reference(hidden @ weight.T, targets, ...)`."""
    return cross_entropy_reference(hidden @ weight.T, targets, **options)


def cross_entropy(
    logits: Tensor,
    targets: Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    vocab_size: int | None = None,
) -> Tensor:
    """Cross-entropy of `logits` (N, V) against class indices `targets` (N,), fused in one kernel.

    Accumulates in fp32 whatever the logits' dtype (fp32/fp16/bf16); returns a float32 scalar for
    "mean"/"sum" and (N,) for "none". Differentiable in `logits`; the gradient is computed in the
    forward kernel and kept (an (N, V) buffer in logits' dtype) until backward.

    Raises TypeError for non-tensors or unsupported dtypes, ValueError for bad shapes, reduction,
    label_smoothing or vocab_size, RuntimeError when the kernels cannot run on logits' device.
    """
    _check_tensor("logits", logits, 2, "(N, V)")
    _check_targets(targets, logits.shape[0], logits.device)
    vocab = _check_common(reduction, label_smoothing, vocab_size, logits.shape[1])
    require_available(logits.device, "cross_entropy")
    compute_grad = logits.requires_grad and torch.is_grad_enabled()
    loss, _ = _cross_entropy_op(
        logits, targets, ignore_index, reduction, float(label_smoothing), vocab, compute_grad
    )
    return loss


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    vocab_size: int | None = None,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """`cross_entropy(hidden @ weight.T, targets, ...)` without materialising all the logits.

    hidden: (N, C) final hidden states; weight: (V, C) LM head (V may include padding columns past
    `vocab_size`); targets: (N,) class indices. Tokens are processed `chunk_size` at a time (default:
    as many as keep a chunk's logits within 32 MiB). Under autocast the matmuls run in the autocast
    dtype, like `F.linear` would; the weight gradient is accumulated in fp32 and returned in weight's
    dtype. Returns a float32 scalar ("mean"/"sum") or (N,) ("none"). Differentiable in hidden and
    weight; with "mean"/"sum" the gradients are computed during the forward, with "none" the backward
    recomputes the logits chunk by chunk.

    Raises TypeError for non-tensors or mismatched/unsupported dtypes, ValueError for bad shapes,
    reduction, label_smoothing, vocab_size or chunk_size, RuntimeError when the kernels cannot run.
    """
    _check_tensor("hidden", hidden, 2, "(N, C)")
    _check_tensor("weight", weight, 2, "(V, C)")
    if weight.shape[1] != hidden.shape[1] or weight.device != hidden.device:
        raise ValueError(
            f"linear_cross_entropy: weight {tuple(weight.shape)} on {weight.device} does not match "
            f"hidden {tuple(hidden.shape)} on {hidden.device}: need weight (V, C) on one device"
        )
    _check_targets(targets, hidden.shape[0], hidden.device)
    vocab = _check_common(reduction, label_smoothing, vocab_size, weight.shape[0])
    compute_dtype = _compute_dtype(hidden, weight)
    chunk = _check_chunk(chunk_size, weight.shape[0], compute_dtype, hidden.shape[0])
    require_available(hidden.device, "linear_cross_entropy")
    grad_enabled = torch.is_grad_enabled()
    options = _LinearOptions(ignore_index, float(label_smoothing), vocab, chunk, compute_dtype)
    wants = (hidden.requires_grad and grad_enabled, weight.requires_grad and grad_enabled)
    return _LinearCrossEntropy.apply(hidden, weight, targets, reduction, options, wants)


def _triton():
    from smallgpt.kernels import _cross_entropy_triton

    return _cross_entropy_triton


def _check_tensor(name: str, t: Tensor, ndim: int, layout: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in KERNEL_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
    if t.dim() != ndim or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty {layout} tensor, got shape {tuple(t.shape)}")


def _check_targets(targets: Tensor, n_rows: int, device: torch.device) -> None:
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"targets must hold int64 (or int32) class indices, got {targets.dtype}")
    if targets.shape != (n_rows,):
        raise ValueError(f"targets must have shape ({n_rows},), got {tuple(targets.shape)}")
    if targets.device != device:
        raise ValueError(f"targets are on {targets.device} but the scores are on {device}")


def _check_common(
    reduction: str, label_smoothing: float, vocab_size: int | None, n_cols: int
) -> int:
    """Validate the shared options; returns the real vocabulary size."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if vocab_size is None:
        return n_cols
    if (
        isinstance(vocab_size, bool)
        or not isinstance(vocab_size, int)
        or not (1 <= vocab_size <= n_cols)
    ):
        raise ValueError(
            f"vocab_size must be an int in [1, {n_cols}] (the columns), got {vocab_size!r}"
        )
    return vocab_size


def _compute_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    """The matmul dtype: autocast's when it is on (as F.linear would), else the inputs' shared dtype."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    if weight.dtype != hidden.dtype:
        raise TypeError(
            f"linear_cross_entropy: hidden is {hidden.dtype} but weight is {weight.dtype}; "
            "cast one of them or run under torch.autocast"
        )
    return hidden.dtype


def _check_chunk(chunk_size: int | None, n_cols: int, dtype: torch.dtype, n_rows: int) -> int:
    if chunk_size is None:
        per_token = n_cols * torch.empty((), dtype=dtype).element_size()
        return max(1, min(n_rows, _CHUNK_BYTES // per_token))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return min(chunk_size, n_rows)


def _scored_scale(targets: Tensor, ignore_index: int, reduction: str) -> tuple[Tensor, Tensor]:
    """(number of scored targets, per-row gradient scale as a 0-d fp32 tensor); no host sync."""
    scored = (targets != ignore_index).sum()
    if reduction == "mean":
        return scored, 1.0 / scored.float()
    return scored, torch.ones((), dtype=torch.float32, device=targets.device)


def _reduce(loss_rows: Tensor, scored: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss_rows.sum() / scored
    if reduction == "sum":
        return loss_rows.sum()
    return loss_rows


def _loss_like(n_rows: int, reduction: str, device: torch.device) -> Tensor:
    shape = (n_rows,) if reduction == "none" else ()
    return torch.empty(shape, dtype=torch.float32, device=device)


# --- cross_entropy: custom op and autograd --------------------------------------------------------


@torch.library.custom_op("smallgpt::cross_entropy", mutates_args=())
def _cross_entropy_op(
    logits: Tensor,
    targets: Tensor,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    vocab_size: int,
    compute_grad: bool,
) -> tuple[Tensor, Tensor]:
    logits = unit_last_stride(logits)
    scored, scale = _scored_scale(targets, ignore_index, reduction)
    loss_rows = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    grad = logits.new_empty(logits.shape) if compute_grad else None
    _triton().cross_entropy_rows(
        logits,
        targets.contiguous(),
        loss_rows,
        grad,
        scale,
        vocab_size,
        ignore_index,
        label_smoothing,
    )
    loss = _reduce(loss_rows, scored, reduction)
    return loss, grad if grad is not None else logits.new_empty(0)


@_cross_entropy_op.register_fake
def _cross_entropy_fake(
    logits, targets, ignore_index, reduction, label_smoothing, vocab_size, compute_grad
):
    grad = logits.new_empty(logits.shape) if compute_grad else logits.new_empty(0)
    return _loss_like(logits.shape[0], reduction, logits.device), grad


def _cross_entropy_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(output[1])


def _cross_entropy_backward(ctx, grad_loss: Tensor, _grad_grad: Tensor):
    (grad,) = ctx.saved_tensors
    # grad already holds d loss / d logits (reduction included); scale by the incoming gradient
    return _scale_rows_op(grad, grad_loss), None, None, None, None, None, None


_cross_entropy_op.register_autograd(_cross_entropy_backward, setup_context=_cross_entropy_setup)


@torch.library.custom_op("smallgpt::scale_rows", mutates_args=())
def _scale_rows_op(grad: Tensor, scale: Tensor) -> Tensor:
    return _triton().scale_rows(grad, scale)


@_scale_rows_op.register_fake
def _scale_rows_fake(grad, scale):
    return torch.empty_like(grad)


# --- linear_cross_entropy: chunked LM head + loss -------------------------------------------------


def _accumulate_fp32(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """acc += a @ b with fp32 `acc`; cuBLAS accumulates 16-bit products straight into it."""
    if a.is_cuda and a.dtype in (torch.float16, torch.bfloat16):
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    elif a.dtype == torch.float32:
        acc.addmm_(a, b)
    else:
        acc.addmm_(a.float(), b.float())


class _LinearOptions(NamedTuple):
    """The options of one `linear_cross_entropy` call, shared by its forward and its backward."""

    ignore_index: int
    label_smoothing: float
    vocab_size: int
    chunk_size: int
    compute_dtype: torch.dtype


@torch.library.custom_op("smallgpt::linear_cross_entropy", mutates_args=())
def _linear_cross_entropy_op(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    scale: Tensor,
    ignore_index: int,
    label_smoothing: float,
    vocab_size: int,
    chunk_size: int,
    compute_dtype: torch.dtype,
    grad_hidden: bool,
    grad_weight: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row losses and the gradients (times `scale`, 0-d or per row) chunk by chunk.

    The one pass behind both the forward and the backward's recomputation. Returns (loss_rows fp32
    (N,), grad_hidden in hidden's dtype, grad_weight fp32); a gradient not asked for is empty.
    """
    kernels = _triton()
    n_rows = hidden.shape[0]
    w = weight.to(compute_dtype)
    targets = targets.contiguous()
    loss_rows = torch.empty(n_rows, dtype=torch.float32, device=hidden.device)
    g_hidden = hidden.new_empty(hidden.shape) if grad_hidden else None
    g_weight = (
        torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        if grad_weight
        else None
    )
    write_grad = grad_hidden or grad_weight
    # dtypes are chosen explicitly here; autocast would otherwise re-cast every matmul
    with torch.autocast(hidden.device.type, enabled=False):
        for start in range(0, n_rows, chunk_size):
            stop = min(start + chunk_size, n_rows)
            h = hidden[start:stop].to(compute_dtype)
            logits = h @ w.T
            # the chunk's logits are overwritten by their gradient: no second (chunk, V) buffer
            kernels.cross_entropy_rows(
                logits,
                targets[start:stop],
                loss_rows[start:stop],
                logits if write_grad else None,
                scale[start:stop] if scale.dim() else scale,
                vocab_size,
                ignore_index,
                label_smoothing,
            )
            if g_hidden is not None:
                if g_hidden.dtype == compute_dtype:
                    torch.mm(logits, w, out=g_hidden[start:stop])
                else:
                    g_hidden[start:stop] = logits @ w
            if g_weight is not None:
                _accumulate_fp32(g_weight, logits.T, h)
    # a gradient not asked for is a fresh empty tensor: custom-op outputs may not alias each other
    return (
        loss_rows,
        g_hidden if g_hidden is not None else hidden.new_empty(0),
        g_weight if g_weight is not None else hidden.new_empty(0, dtype=torch.float32),
    )


@_linear_cross_entropy_op.register_fake
def _linear_cross_entropy_fake(hidden, weight, targets, scale, *options_and_wants):
    grad_hidden, grad_weight = options_and_wants[-2:]
    return (
        hidden.new_empty(hidden.shape[0], dtype=torch.float32),
        hidden.new_empty(hidden.shape) if grad_hidden else hidden.new_empty(0),
        weight.new_empty(weight.shape, dtype=torch.float32)
        if grad_weight
        else hidden.new_empty(0, dtype=torch.float32),
    )


class _LinearCrossEntropy(torch.autograd.Function):
    """Autograd over `_linear_cross_entropy_op`: with "mean"/"sum" the forward computes the
    gradients too; with "none" each row's incoming gradient differs, so the backward calls the op
    again with the same options."""

    @staticmethod
    def forward(
        ctx,
        hidden: Tensor,
        weight: Tensor,
        targets: Tensor,
        reduction: str,
        options: _LinearOptions,
        wants: tuple[bool, bool],
    ) -> Tensor:
        scored, scale = _scored_scale(targets, options.ignore_index, reduction)
        early = reduction != "none"
        loss_rows, g_hidden, g_weight = _linear_cross_entropy_op(
            hidden, weight, targets, scale, *options, wants[0] and early, wants[1] and early
        )
        ctx.options, ctx.wants, ctx.early = options, wants, early
        ctx.dtypes = (hidden.dtype, weight.dtype)
        if early:
            ctx.save_for_backward(g_hidden, g_weight)
        else:
            ctx.save_for_backward(hidden, weight, targets)
        return _reduce(loss_rows, scored, reduction)

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        if ctx.early:
            g_hidden, g_weight = ctx.saved_tensors
            # the saved gradients include the reduction; scale by the incoming gradient in fp32
            g_hidden, g_weight = g_hidden.float() * grad_loss, g_weight * grad_loss
        else:
            hidden, weight, targets = ctx.saved_tensors
            # the kernel reads one scale per row from contiguous memory (an expanded grad is not)
            _, g_hidden, g_weight = _linear_cross_entropy_op(
                hidden, weight, targets, grad_loss.contiguous(), *ctx.options, *ctx.wants
            )
        grad_hidden = g_hidden.to(ctx.dtypes[0]) if ctx.wants[0] else None
        grad_weight = g_weight.to(ctx.dtypes[1]) if ctx.wants[1] else None
        return grad_hidden, grad_weight, None, None, None, None
