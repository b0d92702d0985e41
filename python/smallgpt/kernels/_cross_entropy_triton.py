"""Triton kernels for cross-entropy: per-row loss and gradient in one kernel, and a row-scaling pass.

Imported only when a kernel runs (see `_support`). One program handles one row of logits: a first
sweep keeps a running max and sum of exponentials (online softmax), a second sweep writes the
gradient. A row that fits in one block is read from memory once and both sweeps run on registers;
longer rows are swept in blocks of 4096 by small programs (about 32 registers a thread, several resident
per SM to hide memory latency), whose second sweep mostly re-reads the row from L2.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from smallgpt.kernels._support import interpreting

if interpreting():
    # small blocks so that tests with a few thousand columns exercise the multi-block sweeps
    SINGLE_MAX, LOOP_BLOCK = 512, 256
else:
    SINGLE_MAX, LOOP_BLOCK = 4096, 4096


@triton.jit
def _grad_block(x, cols, lse, target, n_cols, scale, label_smoothing, SMOOTHING: tl.constexpr):
    """d loss / d logits for one block: softmax - smoothed one-hot, times the row's scale."""
    g = tl.exp(x - lse)
    if SMOOTHING:
        g = g - label_smoothing / n_cols
        g = tl.where(cols == target, g - (1.0 - label_smoothing), g)
    else:
        g = tl.where(cols == target, g - 1.0, g)
    # padded vocabulary columns never enter the softmax and get no gradient
    return tl.where(cols < n_cols, g * scale, 0.0)


@triton.jit
def _cross_entropy_kernel(
    LOGITS,
    stride_lr,
    GRAD,
    stride_gr,
    TARGETS,
    LOSS,
    SCALE,
    stride_sr,
    n_cols,
    n_cols_padded,
    ignore_index,
    label_smoothing,
    SMOOTHING: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    SINGLE_BLOCK: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """Row loss (natural log, unscaled) and, with WRITE_GRAD, scale * d loss / d logits.

    Ignored rows get loss 0 and gradient 0; a target outside [0, n_cols) gets loss NaN and gradient
    NaN, so a bad label cannot pass silently. GRAD may alias LOGITS (each element is read before it
    is overwritten, by the same program).
    """
    row = tl.program_id(0).to(tl.int64)
    logits_row = LOGITS + row * stride_lr
    target = tl.load(TARGETS + row).to(tl.int64)
    scored = target != ignore_index
    in_range = (target >= 0) & (target < n_cols)
    cols0 = tl.arange(0, BLOCK_V)

    if SINGLE_BLOCK:
        x_row = tl.load(logits_row + cols0, mask=cols0 < n_cols, other=float("-inf")).to(tl.float32)
        m = tl.max(x_row, 0)
        lse = m + tl.log(tl.sum(tl.exp(x_row - m), 0))
        sum_x = tl.sum(tl.where(cols0 < n_cols, x_row, 0.0), 0)
    else:
        m = float("-inf")
        d = 0.0
        sum_x = 0.0
        for start in range(0, n_cols, BLOCK_V):
            cols = start + cols0
            x = tl.load(logits_row + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, 0))
            d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
            m = m_new
            if SMOOTHING:
                sum_x += tl.sum(tl.where(cols < n_cols, x, 0.0), 0)
        lse = m + tl.log(d)

    x_target = tl.load(logits_row + tl.where(in_range, target, 0)).to(tl.float32)
    if SMOOTHING:
        # (1 - eps) * (lse - x_target) + eps * mean over classes of (lse - x_c)
        loss = lse - (1.0 - label_smoothing) * x_target - label_smoothing * sum_x / n_cols
    else:
        loss = lse - x_target
    bad = scored & (~in_range)
    loss = tl.where(bad, float("nan"), tl.where(scored, loss, 0.0))
    tl.store(LOSS + row, loss)

    if WRITE_GRAD:
        scale = tl.load(SCALE + row * stride_sr).to(tl.float32)
        scale = tl.where(bad, float("nan"), tl.where(scored, scale, 0.0))
        grad_row = GRAD + row * stride_gr
        if SINGLE_BLOCK:
            g = _grad_block(x_row, cols0, lse, target, n_cols, scale, label_smoothing, SMOOTHING)
            tl.store(grad_row + cols0, g.to(GRAD.dtype.element_ty), mask=cols0 < n_cols_padded)
        else:
            for start in range(0, n_cols_padded, BLOCK_V):
                cols = start + cols0
                x = tl.load(logits_row + cols, mask=cols < n_cols, other=float("-inf"))
                g = _grad_block(
                    x.to(tl.float32), cols, lse, target, n_cols, scale, label_smoothing, SMOOTHING
                )
                tl.store(grad_row + cols, g.to(GRAD.dtype.element_ty), mask=cols < n_cols_padded)


@triton.jit
def _scale_rows_kernel(
    G, stride_gr, OUT, stride_or, SCALE, stride_sr, n_cols, BLOCK_V: tl.constexpr
):
    """OUT[r, :] = G[r, :] * SCALE[r * stride_sr], multiplied in fp32."""
    row = tl.program_id(0).to(tl.int64)
    scale = tl.load(SCALE + row * stride_sr).to(tl.float32)
    for start in range(0, n_cols, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        g = tl.load(G + row * stride_gr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        tl.store(
            OUT + row * stride_or + cols, (g * scale).to(OUT.dtype.element_ty), mask=cols < n_cols
        )


def block_and_warps(n_cols: int) -> tuple[int, int, bool]:
    """(BLOCK_V, num_warps, single block) for rows of n_cols columns."""
    block = triton.next_power_of_2(n_cols)
    if block <= SINGLE_MAX:
        return block, max(1, min(8, block // 512)), True
    # 16 warps: with 8, sm_90's fp16 build of the gradient sweep needs a stack frame (compile report)
    return LOOP_BLOCK, 16, False


def cross_entropy_rows(
    logits: torch.Tensor,
    targets: torch.Tensor,
    loss: torch.Tensor,
    grad: torch.Tensor | None,
    scale: torch.Tensor,
    vocab_size: int,
    ignore_index: int,
    label_smoothing: float,
) -> None:
    """Fill `loss` (N,) fp32 and, when given, `grad` (N, V) with scale[row] * d loss_row / d logits.

    logits: (N, V) with unit column stride; the softmax covers columns [0, vocab_size). `scale` is
    read at row * scale.stride(0) (stride 0 broadcasts one value). `grad` may be `logits` itself.
    """
    n_rows, n_cols_padded = logits.shape
    block, warps, single = block_and_warps(n_cols_padded)
    grad_arg = grad if grad is not None else logits
    _cross_entropy_kernel[(n_rows,)](
        logits,
        logits.stride(0),
        grad_arg,
        grad_arg.stride(0),
        targets,
        loss,
        scale,
        scale.stride(0) if scale.dim() else 0,
        vocab_size,
        n_cols_padded,
        ignore_index,
        label_smoothing,
        SMOOTHING=label_smoothing > 0.0,
        WRITE_GRAD=grad is not None,
        SINGLE_BLOCK=single,
        BLOCK_V=block,
        num_warps=warps,
    )


def scale_rows(grad: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """grad (N, V) * scale, with scale 0-d or (N,) (any stride), computed in fp32, in grad's dtype."""
    out = torch.empty_like(grad)
    n_rows, n_cols = grad.shape
    block, warps = scale_launch(n_cols)
    _scale_rows_kernel[(n_rows,)](
        grad,
        grad.stride(0),
        out,
        out.stride(0),
        scale,
        scale.stride(0) if scale.dim() else 0,
        n_cols,
        BLOCK_V=block,
        num_warps=warps,
    )
    return out


def scale_launch(n_cols: int) -> tuple[int, int]:
    """(BLOCK_V, num_warps) of `scale_rows` for rows of n_cols columns."""
    block = min(triton.next_power_of_2(n_cols), LOOP_BLOCK)
    return block, max(1, min(8, block // 512))
