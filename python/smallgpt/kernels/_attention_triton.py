"""Triton kernels for flash attention: forward, backward (dK/dV and dQ passes) and the dropout mask.

Imported only when a kernel runs (see `_support`). Tensors are (batch, heads, seq, head_dim) with any
strides as long as head_dim is the unit-stride axis; `lse` and `delta` are contiguous (B, H, T) fp32.

Scores are handled in base 2: s = q.k * softmax_scale * log2(e), so that exp2 (one MUFU op) replaces
exp. The saved log-sum-exp is in natural-log units, lse = ln(sum_j exp(q_i.k_j * softmax_scale)).

Dropout: element (b, h, i, j) of the attention matrix is kept when tl.rand(seed, (bh*T + i)*T + j)
>= dropout_p, with bh = b*H + h. Every kernel regenerates the bit from those int64 counters, so the
forward, both backward passes and `dropout_mask` agree exactly without storing a mask.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from smallgpt.kernels._support import dot_precision, interpreting, unit_last_stride

# Globals used inside kernels must be constexpr.
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


def _configs(names: tuple[str, str], shapes: list[tuple[int, int, int, int]]) -> list:
    """(owned tile, walked tile, warps, stages) -> autotune configs naming the tiles `names`."""
    return [
        triton.Config({names[0]: a, names[1]: b}, num_warps=w, num_stages=s)
        for a, b, w, s in shapes
    ]


# Forward and dQ programs own a query tile (BLOCK_M) and walk key tiles (BLOCK_N); dK/dV programs
# own a key tile and walk query tiles. The owned tile must be a multiple of the walked one.
_QUERY_OWNED = ("BLOCK_M", "BLOCK_N")
_KEY_OWNED = ("BLOCK_N", "BLOCK_M")
if interpreting():
    # The interpreter runs programs one after another in Python: no tuning, and tiles that still
    # split a 77-token sequence into several blocks so that every loop phase is exercised.
    _FWD = _configs(_QUERY_OWNED, [(32, 16, 4, 1)])
    _BWD_KV = _configs(_KEY_OWNED, [(32, 16, 4, 1)])
    _BWD_Q = _configs(_QUERY_OWNED, [(32, 16, 4, 1)])
else:
    # Candidates that compile without register spills for head_dim 64 on sm_90 (cuobjdump
    # -res-usage), each list keeping spill-free ones with dropout too; autotuning picks per shape.
    _FWD = _configs(
        _QUERY_OWNED,
        [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3)],
    )
    _BWD_KV = _configs(
        _KEY_OWNED, [(128, 32, 8, 3), (128, 64, 8, 3), (64, 32, 4, 3), (64, 32, 8, 3)]
    )
    _BWD_Q = _configs(
        _QUERY_OWNED, [(128, 32, 8, 3), (128, 64, 8, 3), (64, 32, 4, 3), (64, 64, 4, 3)]
    )

# Retune only when the sequence length changes octave, not for every length (generation loops).
_KEY = ["SEQ_BUCKET", "HEAD_DIM", "CAUSAL", "DROPOUT"]


@triton.jit
def _rows(offs, WIDE: tl.constexpr):
    """Row indices for addresses inside one (batch, head) slice; int64 only if they can overflow."""
    if WIDE:
        offs = offs.to(tl.int64)
    return offs


@triton.jit
def _keep(seed, bh, T, rows, cols, dropout_p):
    """Dropout keep-bits for attention elements (rows, cols) of head bh; rows/cols broadcast."""
    counters = (bh * T + rows.to(tl.int64)) * T + cols.to(tl.int64)
    return tl.rand(seed, counters) >= dropout_p


@triton.jit
def _fwd_inner(
    acc,
    l_i,
    m_i,
    q,
    k_base,
    v_base,
    stride_kt,
    stride_vt,
    offs_m,
    offs_d,
    lo,
    hi,
    T,
    qk_scale,
    seed,
    bh,
    dropout_p,
    MASK: tl.constexpr,
    CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
    WIDE: tl.constexpr,
):
    """Online-softmax accumulation of key/value blocks [lo, hi) into (acc, l_i, m_i).

    MASK applies the sequence-end and causal masks; blocks that need neither skip that work.
    """
    arange_n = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + arange_n
        rows_n = _rows(offs_n, WIDE)
        kt_ptrs = k_base + rows_n[None, :] * stride_kt + offs_d[:, None]
        v_ptrs = v_base + rows_n[:, None] * stride_vt + offs_d[None, :]
        if MASK:
            kt = tl.load(kt_ptrs, mask=offs_n[None, :] < T, other=0.0)
            v = tl.load(v_ptrs, mask=offs_n[:, None] < T, other=0.0)
        else:
            kt = tl.load(kt_ptrs)
            v = tl.load(v_ptrs)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
        if MASK:
            valid = offs_n[None, :] < T
            if CAUSAL:
                valid = valid & (offs_n[None, :] <= offs_m[:, None])
            s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if DROPOUT:
            p = tl.where(_keep(seed, bh, T, offs_m[:, None], offs_n[None, :], dropout_p), p, 0.0)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.autotune(configs=_FWD, key=_KEY)
@triton.jit
def _attn_fwd_kernel(
    Q,
    K,
    V,
    O,
    LSE,
    SEED,
    stride_qb,
    stride_qh,
    stride_qt,
    stride_kb,
    stride_kh,
    stride_kt,
    stride_vb,
    stride_vh,
    stride_vt,
    stride_ob,
    stride_oh,
    stride_ot,
    H,
    T,
    SEQ_BUCKET,
    softmax_scale,
    dropout_p,
    HEAD_DIM: tl.constexpr,
    CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr,
    WIDE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # the diagonal starts at a multiple of BLOCK_M, which must be a key-block boundary
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    # Causal blocks near the end of the sequence have the most work: schedule them first.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    rows_m = _rows(offs_m, WIDE)
    row_ok = offs_m < T

    q_ptrs = Q + b * stride_qb + h * stride_qh + rows_m[:, None] * stride_qt + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    seed = 0
    if DROPOUT:
        seed = tl.load(SEED)

    qk_scale = softmax_scale * LOG2E
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    if CAUSAL:
        # keys left of this query block need no mask; the diagonal blocks do
        full_hi = start_m
        masked_hi = tl.minimum(start_m + BLOCK_M, T)
    else:
        full_hi = (T // BLOCK_N) * BLOCK_N
        masked_hi = T
    acc, l_i, m_i = _fwd_inner(
        acc,
        l_i,
        m_i,
        q,
        k_base,
        v_base,
        stride_kt,
        stride_vt,
        offs_m,
        offs_d,
        0,
        full_hi,
        T,
        qk_scale,
        seed,
        bh,
        dropout_p,
        False,
        CAUSAL,
        DROPOUT,
        BLOCK_N,
        PRECISION,
        WIDE,
    )
    acc, l_i, m_i = _fwd_inner(
        acc,
        l_i,
        m_i,
        q,
        k_base,
        v_base,
        stride_kt,
        stride_vt,
        offs_m,
        offs_d,
        full_hi,
        masked_hi,
        T,
        qk_scale,
        seed,
        bh,
        dropout_p,
        True,
        CAUSAL,
        DROPOUT,
        BLOCK_N,
        PRECISION,
        WIDE,
    )

    out = acc / l_i[:, None]
    if DROPOUT:
        out = out / (1.0 - dropout_p)
    o_ptrs = O + b * stride_ob + h * stride_oh + rows_m[:, None] * stride_ot + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None])
    lse = (m_i + tl.log2(l_i)) * LN2
    tl.store(LSE + bh * T + rows_m, lse, mask=row_ok)


@triton.jit
def _attn_bwd_delta_kernel(
    O,
    DO,
    DELTA,
    stride_ob,
    stride_oh,
    stride_ot,
    stride_db,
    stride_dh,
    stride_dt,
    H,
    T,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """delta_i = sum_d out_id * dout_id: the row term of the softmax backward (dropout included)."""
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = offs_m.to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    ok = offs_m[:, None] < T
    o = tl.load(
        O + b * stride_ob + h * stride_oh + rows[:, None] * stride_ot + offs_d[None, :],
        mask=ok,
        other=0.0,
    )
    do = tl.load(
        DO + b * stride_db + h * stride_dh + rows[:, None] * stride_dt + offs_d[None, :],
        mask=ok,
        other=0.0,
    )
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh * T + rows, delta, mask=offs_m < T)


@triton.jit
def _bwd_kv_inner(
    dk,
    dv,
    k,
    v,
    q_base,
    do_base,
    lse_base,
    delta_base,
    stride_qt,
    stride_dot,
    offs_n,
    offs_d,
    lo,
    hi,
    T,
    qk_scale,
    seed,
    bh,
    dropout_p,
    MASK: tl.constexpr,
    CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    PRECISION: tl.constexpr,
    WIDE: tl.constexpr,
):
    """Accumulate dK, dV of one key block over query blocks [lo, hi), in transposed (key, query) tiles."""
    arange_m = tl.arange(0, BLOCK_M)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + arange_m
        rows_m = _rows(offs_m, WIDE)
        qt_ptrs = q_base + rows_m[None, :] * stride_qt + offs_d[:, None]
        do_ptrs = do_base + rows_m[:, None] * stride_dot + offs_d[None, :]
        if MASK:
            qt = tl.load(qt_ptrs, mask=offs_m[None, :] < T, other=0.0)
            do = tl.load(do_ptrs, mask=offs_m[:, None] < T, other=0.0)
            lse2 = tl.load(lse_base + rows_m, mask=offs_m < T, other=0.0) * LOG2E
            delta = tl.load(delta_base + rows_m, mask=offs_m < T, other=0.0)
        else:
            qt = tl.load(qt_ptrs)
            do = tl.load(do_ptrs)
            lse2 = tl.load(lse_base + rows_m) * LOG2E
            delta = tl.load(delta_base + rows_m)
        pt = tl.exp2(tl.dot(k, qt, input_precision=PRECISION) * qk_scale - lse2[None, :])
        if MASK:
            valid = offs_m[None, :] < T
            if CAUSAL:
                valid = valid & (offs_m[None, :] >= offs_n[:, None])
            pt = tl.where(valid, pt, 0.0)
        dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        if DROPOUT:
            keep = _keep(seed, bh, T, offs_m[None, :], offs_n[:, None], dropout_p)
            inv_keep = 1.0 / (1.0 - dropout_p)
            dv = tl.dot(
                tl.where(keep, pt * inv_keep, 0.0).to(do.dtype), do, dv, input_precision=PRECISION
            )
            dpt = tl.where(keep, dpt * inv_keep, 0.0)
        else:
            dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), dk, input_precision=PRECISION)
    return dk, dv


@triton.autotune(configs=_BWD_KV, key=_KEY)
@triton.jit
def _attn_bwd_kv_kernel(
    Q,
    K,
    V,
    DO,
    DK,
    DV,
    LSE,
    DELTA,
    SEED,
    stride_qb,
    stride_qh,
    stride_qt,
    stride_kb,
    stride_kh,
    stride_kt,
    stride_vb,
    stride_vh,
    stride_vt,
    stride_dob,
    stride_doh,
    stride_dot,
    stride_dkb,
    stride_dkh,
    stride_dkt,
    stride_dvb,
    stride_dvh,
    stride_dvt,
    H,
    T,
    SEQ_BUCKET,
    softmax_scale,
    dropout_p,
    HEAD_DIM: tl.constexpr,
    CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr,
    WIDE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    # the diagonal starts at a multiple of BLOCK_N, which must be a query-block boundary
    tl.static_assert(BLOCK_N % BLOCK_M == 0)
    # key blocks near the start have the most (causal) queries and come first in grid order
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    rows_n = _rows(offs_n, WIDE)
    row_ok = offs_n[:, None] < T
    k = tl.load(
        K + b * stride_kb + h * stride_kh + rows_n[:, None] * stride_kt + offs_d[None, :],
        mask=row_ok,
        other=0.0,
    )
    v = tl.load(
        V + b * stride_vb + h * stride_vh + rows_n[:, None] * stride_vt + offs_d[None, :],
        mask=row_ok,
        other=0.0,
    )
    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_dob + h * stride_doh
    lse_base = LSE + bh * T
    delta_base = DELTA + bh * T
    seed = 0
    if DROPOUT:
        seed = tl.load(SEED)

    qk_scale = softmax_scale * LOG2E
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    full_hi = (T // BLOCK_M) * BLOCK_M
    if CAUSAL:
        # queries on the diagonal need the causal mask, those below it need none
        full_lo = start_n + BLOCK_N
        tail_lo = tl.maximum(full_lo, full_hi)
        dk, dv = _bwd_kv_inner(
            dk,
            dv,
            k,
            v,
            q_base,
            do_base,
            lse_base,
            delta_base,
            stride_qt,
            stride_dot,
            offs_n,
            offs_d,
            start_n,
            tl.minimum(full_lo, T),
            T,
            qk_scale,
            seed,
            bh,
            dropout_p,
            True,
            CAUSAL,
            DROPOUT,
            BLOCK_M,
            PRECISION,
            WIDE,
        )
    else:
        full_lo = 0
        tail_lo = full_hi
    dk, dv = _bwd_kv_inner(
        dk,
        dv,
        k,
        v,
        q_base,
        do_base,
        lse_base,
        delta_base,
        stride_qt,
        stride_dot,
        offs_n,
        offs_d,
        full_lo,
        full_hi,
        T,
        qk_scale,
        seed,
        bh,
        dropout_p,
        False,
        CAUSAL,
        DROPOUT,
        BLOCK_M,
        PRECISION,
        WIDE,
    )
    dk, dv = _bwd_kv_inner(
        dk,
        dv,
        k,
        v,
        q_base,
        do_base,
        lse_base,
        delta_base,
        stride_qt,
        stride_dot,
        offs_n,
        offs_d,
        tail_lo,
        T,
        T,
        qk_scale,
        seed,
        bh,
        dropout_p,
        True,
        CAUSAL,
        DROPOUT,
        BLOCK_M,
        PRECISION,
        WIDE,
    )

    dk = dk * softmax_scale
    tl.store(
        DK + b * stride_dkb + h * stride_dkh + rows_n[:, None] * stride_dkt + offs_d[None, :],
        dk.to(DK.dtype.element_ty),
        mask=row_ok,
    )
    tl.store(
        DV + b * stride_dvb + h * stride_dvh + rows_n[:, None] * stride_dvt + offs_d[None, :],
        dv.to(DV.dtype.element_ty),
        mask=row_ok,
    )


@triton.jit
def _bwd_q_inner(
    dq,
    q,
    do,
    lse2,
    delta,
    k_base,
    v_base,
    stride_kt,
    stride_vt,
    offs_m,
    offs_d,
    lo,
    hi,
    T,
    qk_scale,
    seed,
    bh,
    dropout_p,
    MASK: tl.constexpr,
    CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
    WIDE: tl.constexpr,
):
    """Accumulate dQ of one query block over key blocks [lo, hi)."""
    arange_n = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + arange_n
        rows_n = _rows(offs_n, WIDE)
        kt_ptrs = k_base + rows_n[None, :] * stride_kt + offs_d[:, None]
        vt_ptrs = v_base + rows_n[None, :] * stride_vt + offs_d[:, None]
        if MASK:
            kt = tl.load(kt_ptrs, mask=offs_n[None, :] < T, other=0.0)
            vt = tl.load(vt_ptrs, mask=offs_n[None, :] < T, other=0.0)
        else:
            kt = tl.load(kt_ptrs)
            vt = tl.load(vt_ptrs)
        p = tl.exp2(tl.dot(q, kt, input_precision=PRECISION) * qk_scale - lse2[:, None])
        if MASK:
            valid = offs_n[None, :] < T
            if CAUSAL:
                valid = valid & (offs_n[None, :] <= offs_m[:, None])
            p = tl.where(valid, p, 0.0)
        dp = tl.dot(do, vt, input_precision=PRECISION)
        if DROPOUT:
            keep = _keep(seed, bh, T, offs_m[:, None], offs_n[None, :], dropout_p)
            dp = tl.where(keep, dp * (1.0 / (1.0 - dropout_p)), 0.0)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq, input_precision=PRECISION)
    return dq


@triton.autotune(configs=_BWD_Q, key=_KEY)
@triton.jit
def _attn_bwd_q_kernel(
    Q,
    K,
    V,
    DO,
    DQ,
    LSE,
    DELTA,
    SEED,
    stride_qb,
    stride_qh,
    stride_qt,
    stride_kb,
    stride_kh,
    stride_kt,
    stride_vb,
    stride_vh,
    stride_vt,
    stride_dob,
    stride_doh,
    stride_dot,
    stride_dqb,
    stride_dqh,
    stride_dqt,
    H,
    T,
    SEQ_BUCKET,
    softmax_scale,
    dropout_p,
    HEAD_DIM: tl.constexpr,
    CAUSAL: tl.constexpr,
    DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr,
    WIDE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    rows_m = _rows(offs_m, WIDE)
    row_ok = offs_m < T
    q = tl.load(
        Q + b * stride_qb + h * stride_qh + rows_m[:, None] * stride_qt + offs_d[None, :],
        mask=row_ok[:, None],
        other=0.0,
    )
    do = tl.load(
        DO + b * stride_dob + h * stride_doh + rows_m[:, None] * stride_dot + offs_d[None, :],
        mask=row_ok[:, None],
        other=0.0,
    )
    lse2 = tl.load(LSE + bh * T + rows_m, mask=row_ok, other=0.0) * LOG2E
    delta = tl.load(DELTA + bh * T + rows_m, mask=row_ok, other=0.0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    seed = 0
    if DROPOUT:
        seed = tl.load(SEED)

    qk_scale = softmax_scale * LOG2E
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    if CAUSAL:
        full_hi = start_m
        masked_hi = tl.minimum(start_m + BLOCK_M, T)
    else:
        full_hi = (T // BLOCK_N) * BLOCK_N
        masked_hi = T
    dq = _bwd_q_inner(
        dq,
        q,
        do,
        lse2,
        delta,
        k_base,
        v_base,
        stride_kt,
        stride_vt,
        offs_m,
        offs_d,
        0,
        full_hi,
        T,
        qk_scale,
        seed,
        bh,
        dropout_p,
        False,
        CAUSAL,
        DROPOUT,
        BLOCK_N,
        PRECISION,
        WIDE,
    )
    dq = _bwd_q_inner(
        dq,
        q,
        do,
        lse2,
        delta,
        k_base,
        v_base,
        stride_kt,
        stride_vt,
        offs_m,
        offs_d,
        full_hi,
        masked_hi,
        T,
        qk_scale,
        seed,
        bh,
        dropout_p,
        True,
        CAUSAL,
        DROPOUT,
        BLOCK_N,
        PRECISION,
        WIDE,
    )
    dq = dq * softmax_scale
    tl.store(
        DQ + b * stride_dqb + h * stride_dqh + rows_m[:, None] * stride_dqt + offs_d[None, :],
        dq.to(DQ.dtype.element_ty),
        mask=row_ok[:, None],
    )


@triton.jit
def _dropout_mask_kernel(MASK, SEED, T, dropout_p, BLOCK: tl.constexpr):
    """Write the keep-bits of one (head, query row) of the attention matrix, as the kernels see them."""
    bh = tl.program_id(1).to(tl.int64)
    row = tl.program_id(0)
    seed = tl.load(SEED)
    for start in range(0, T, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        keep = _keep(seed, bh, T, row, cols, dropout_p)
        tl.store(MASK + (bh * T + row) * T + cols, keep.to(tl.int8), mask=cols < T)


def _bhtd_strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _needs_wide_rows(*tensors: torch.Tensor) -> bool:
    """Whether an offset inside one (batch, head) slice can pass int32: seq * row stride >= 2**31."""
    return any(t.shape[2] * t.stride(2) + t.shape[3] >= 2**31 for t in tensors)


def _grid(owned_tile: str, seq_len: int, batch_heads: int):
    """Launch grid: one program per owned tile of the sequence, per (batch, head)."""
    return lambda meta: (triton.cdiv(seq_len, meta[owned_tile]), batch_heads)


def _seq_bucket(seq_len: int) -> int:
    return triton.next_power_of_2(seq_len)


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    seed: torch.Tensor | None,
    causal: bool,
    softmax_scale: float,
    dropout_p: float,
) -> None:
    """Fill `out` (B, H, T, D) and `lse` (B, H, T) fp32 with the attention forward."""
    q, k, v = unit_last_stride(q), unit_last_stride(k), unit_last_stride(v)
    batch, heads, seq_len, head_dim = q.shape
    _attn_fwd_kernel[_grid("BLOCK_M", seq_len, batch * heads)](
        q,
        k,
        v,
        out,
        lse,
        seed if seed is not None else lse,
        *_bhtd_strides(q),
        *_bhtd_strides(k),
        *_bhtd_strides(v),
        *_bhtd_strides(out),
        heads,
        seq_len,
        _seq_bucket(seq_len),
        softmax_scale,
        dropout_p,
        HEAD_DIM=head_dim,
        CAUSAL=causal,
        DROPOUT=dropout_p > 0.0,
        PRECISION=dot_precision(q.dtype),
        WIDE=_needs_wide_rows(q, k, v, out),
    )


def backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    seed: torch.Tensor | None,
    causal: bool,
    softmax_scale: float,
    dropout_p: float,
    dq: torch.Tensor,
    dk: torch.Tensor,
    dv: torch.Tensor,
) -> None:
    """Fill dq, dk, dv (B, H, T, D) with the attention backward, recomputing P from `lse`."""
    q, k, v, out, grad_out = (unit_last_stride(t) for t in (q, k, v, out, grad_out))
    batch, heads, seq_len, head_dim = q.shape
    delta = torch.empty_like(lse)
    delta_block = 64
    _attn_bwd_delta_kernel[(triton.cdiv(seq_len, delta_block), batch * heads)](
        out,
        grad_out,
        delta,
        *_bhtd_strides(out),
        *_bhtd_strides(grad_out),
        heads,
        seq_len,
        HEAD_DIM=head_dim,
        BLOCK_M=delta_block,
    )
    seed_arg = seed if seed is not None else lse
    common = {
        "HEAD_DIM": head_dim,
        "CAUSAL": causal,
        "DROPOUT": dropout_p > 0.0,
        "PRECISION": dot_precision(q.dtype),
        "WIDE": _needs_wide_rows(q, k, v, grad_out, dq, dk, dv),
    }
    _attn_bwd_kv_kernel[_grid("BLOCK_N", seq_len, batch * heads)](
        q,
        k,
        v,
        grad_out,
        dk,
        dv,
        lse,
        delta,
        seed_arg,
        *_bhtd_strides(q),
        *_bhtd_strides(k),
        *_bhtd_strides(v),
        *_bhtd_strides(grad_out),
        *_bhtd_strides(dk),
        *_bhtd_strides(dv),
        heads,
        seq_len,
        _seq_bucket(seq_len),
        softmax_scale,
        dropout_p,
        **common,
    )
    _attn_bwd_q_kernel[_grid("BLOCK_M", seq_len, batch * heads)](
        q,
        k,
        v,
        grad_out,
        dq,
        lse,
        delta,
        seed_arg,
        *_bhtd_strides(q),
        *_bhtd_strides(k),
        *_bhtd_strides(v),
        *_bhtd_strides(grad_out),
        *_bhtd_strides(dq),
        heads,
        seq_len,
        _seq_bucket(seq_len),
        softmax_scale,
        dropout_p,
        **common,
    )


def dropout_mask(mask: torch.Tensor, seed: torch.Tensor, dropout_p: float) -> None:
    """Fill the contiguous int8 tensor `mask` (B, H, T, T) with the kernels' keep-bits (1 = kept)."""
    batch, heads, seq_len, _ = mask.shape
    block = min(triton.next_power_of_2(seq_len), 1024)
    _dropout_mask_kernel[(seq_len, batch * heads)](mask, seed, seq_len, dropout_p, BLOCK=block)
