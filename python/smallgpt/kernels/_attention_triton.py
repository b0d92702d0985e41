"""Triton kernels for flash attention: forward, backward (dK/dV and dQ passes) and the dropout mask.

Imported only when a kernel runs (see `_support`). Tensors are (batch, heads, seq, head_dim) with a
unit-stride head_dim, in two stride groups: the inputs q, k, v share one set of strides, and out,
grad_out, dq, dk, dv share another (`attention.py` arranges both). `lse` and `delta` are contiguous
(B, H, T) fp32.

Scores are handled in base 2: s = q.k * softmax_scale * log2(e), so that exp2 (one MUFU op) replaces
exp. The saved log-sum-exp is in natural-log units, lse = ln(sum_j exp(q_i.k_j * softmax_scale)).

Every program owns one tile of the sequence and walks tiles of the other side in three phases: a
masked head, an unmasked middle and a masked tail (`_phase`); the walk is written once per kernel and
the constexpr MASK of each phase decides whether the sequence-end and causal masks are applied.

Dropout: element (b, h, i, j) of the attention matrix is kept when tl.rand(seed, (bh*T + i)*T + j)
>= dropout_p, with bh = b*H + h. Every kernel regenerates the bit from those int64 counters, so the
forward, both backward passes and `dropout_mask` agree exactly without storing a mask.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from smallgpt.kernels._support import dot_precision, interpreting

# Globals used inside kernels must be constexpr.
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)

# Forward and dQ programs own a query tile (BLOCK_M) and walk key tiles (BLOCK_N); dK/dV programs
# own a key tile and walk query tiles. The owned tile must be a multiple of the walked one.
# Each shape is (owned tile, walked tile, warps, stages).
Shape = tuple[int, int, int, int]
QUERY_OWNED = ("BLOCK_M", "BLOCK_N")
KEY_OWNED = ("BLOCK_N", "BLOCK_M")
# the tunable kernels, by their name in the compile report, and the tiles they own and walk
TILE_NAMES: dict[str, tuple[str, str]] = {
    "attention_forward": QUERY_OWNED,
    "attention_backward_kv": KEY_OWNED,
    "attention_backward_q": QUERY_OWNED,
}
# Autotune candidates per architecture class and kernel ("_dropout": with the keep-bits, which cost
# registers). Each fits its class at every head dim, in fp16 and bf16: no register spills, shared
# memory within the limit (`make kernel-report` compiles them for sm_80, sm_86, sm_89 and sm_90 into
# benches/kernel_report.json; tests/test_kernels_compile.py checks it). One each for now: a
# candidate costs ~10 s of compiling per (head dim, dtype, architecture) in the report; the largest
# tiles that fit at head_dim 128 were kept (larger ones spill there, more so with dropout). "sm_90"
# serves compute capability 9.x (227 KB of shared memory per block); "sm_80" every other one, so
# its candidates fit sm_86/sm_89's 99 KB, which newer consumer GPUs share.
CANDIDATES: dict[str, dict[str, list[Shape]]] = {
    "sm_80": {
        "attention_forward": [(128, 64, 8, 3)],
        "attention_forward_dropout": [(64, 32, 8, 3)],
        "attention_backward_kv": [(64, 32, 8, 3)],
        "attention_backward_kv_dropout": [(32, 32, 4, 2)],
        "attention_backward_q": [(64, 32, 8, 3)],
        "attention_backward_q_dropout": [(64, 32, 8, 3)],
    },
    "sm_90": {
        "attention_forward": [(128, 64, 8, 3)],
        "attention_forward_dropout": [(64, 32, 8, 3)],
        "attention_backward_kv": [(128, 32, 8, 3)],
        "attention_backward_kv_dropout": [(32, 32, 4, 3)],
        "attention_backward_q": [(128, 32, 8, 3)],
        "attention_backward_q_dropout": [(128, 32, 8, 3)],
    },
}
# The interpreter runs programs one after another in Python: no tuning, and tiles that still split a
# 77-token sequence into several blocks so that every loop phase is exercised.
_INTERPRETER_SHAPES: list[Shape] = [(32, 16, 4, 1)]


def arch_class(capability: tuple[int, int]) -> str:
    """The key of CANDIDATES serving a device of compute capability `capability`."""
    return "sm_90" if capability[0] == 9 else "sm_80"


def candidates(kernel: str, capability: tuple[int, int]) -> list[Shape]:
    """The autotune candidates of `kernel` (a CANDIDATES kernel name) on that compute capability."""
    if interpreting():
        return _INTERPRETER_SHAPES
    return CANDIDATES[arch_class(capability)][kernel]


def configs(names: tuple[str, str], shapes: list[Shape]) -> list:
    """(owned tile, walked tile, warps, stages) shapes -> autotune configs naming the tiles `names`."""
    return [
        triton.Config({names[0]: a, names[1]: b}, num_warps=w, num_stages=s)
        for a, b, w, s in shapes
    ]


def _tuning(kernel: str) -> dict:
    """`triton.autotune` arguments for `kernel`: every class's candidates, pruned at launch to
    those of the launching device's class and dropout setting."""
    names = TILE_NAMES[kernel]
    if interpreting():
        shapes = _INTERPRETER_SHAPES
    else:
        variants = (kernel, kernel + "_dropout")
        shapes = sorted({s for lists in CANDIDATES.values() for k in variants for s in lists[k]})

    def prune(all_configs: list, named_args: dict, **kwargs) -> list:
        name = kernel + ("_dropout" if kwargs["DROPOUT"] else "")
        device = kwargs["Q"].device
        allowed = candidates(name, torch.cuda.get_device_capability(device))
        return [
            c
            for c in all_configs
            if (c.kwargs[names[0]], c.kwargs[names[1]], c.num_warps, c.num_stages) in allowed
        ]

    return {
        "configs": configs(names, shapes),
        "key": _KEY,
        "prune_configs_by": {"early_config_prune": prune},
    }


# rows per program of the delta pass (no tiles walked, nothing to tune)
DELTA_BLOCK = 64
# Retune only when the sequence length changes octave, not for every length (generation loops).
_KEY = ["SEQ_BUCKET", "HEAD_DIM", "CAUSAL", "DROPOUT"]


@triton.jit
def _program(
    H, stride_ib, stride_ih, stride_ob, stride_oh, BLOCK: tl.constexpr, LAST_FIRST: tl.constexpr
):
    """(bh, offset of this program's (batch, head) in the inputs, the same in the outputs, start and
    offsets of its owned tile); LAST_FIRST gives program 0 the last tile of the sequence."""
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    block = tl.program_id(0)
    if LAST_FIRST:
        block = tl.num_programs(0) - 1 - block
    start = block * BLOCK
    offs = start + tl.arange(0, BLOCK)
    return bh, b * stride_ib + h * stride_ih, b * stride_ob + h * stride_oh, start, offs


@triton.jit
def _tile(base, offs, stride_t, T, HEAD_DIM: tl.constexpr, TRANS: tl.constexpr, WIDE: tl.constexpr):
    """Pointers to rows `offs` of one (batch, head) slice, (rows, D) or transposed (D, rows), and
    which of them lie inside the sequence. Row offsets are int64 only if they can pass int32."""
    rows = offs
    if WIDE:
        rows = offs.to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    if TRANS:
        ptrs = base + rows[None, :] * stride_t + offs_d[:, None]
        ok = offs[None, :] < T
    else:
        ptrs = base + rows[:, None] * stride_t + offs_d[None, :]
        ok = offs[:, None] < T
    return ptrs, ok


@triton.jit
def _load(ptrs, ok, MASK: tl.constexpr):
    """Load, reading 0 where not `ok`; blocks known to lie inside the sequence skip the mask."""
    if MASK:
        x = tl.load(ptrs, mask=ok, other=0.0)
    else:
        x = tl.load(ptrs)
    return x


@triton.jit
def _load_rows(
    base,
    offs,
    stride_t,
    T,
    HEAD_DIM: tl.constexpr,
    TRANS: tl.constexpr,
    WIDE: tl.constexpr,
    MASK: tl.constexpr,
):
    """Rows `offs` of one (batch, head) slice as a (rows, D) tile or, with TRANS, (D, rows)."""
    ptrs, ok = _tile(base, offs, stride_t, T, HEAD_DIM, TRANS, WIDE)
    return _load(ptrs, ok, MASK)


@triton.jit
def _store_rows(base, offs, stride_t, T, x, HEAD_DIM: tl.constexpr, WIDE: tl.constexpr):
    """Store the (rows, D) tile `x` into rows `offs` inside the sequence, in the tensor's dtype."""
    ptrs, ok = _tile(base, offs, stride_t, T, HEAD_DIM, False, WIDE)
    tl.store(ptrs, x.to(base.dtype.element_ty), mask=ok)


@triton.jit
def _row_stats(LSE, DELTA, bh, offs, T, MASK: tl.constexpr):
    """The saved log-sum-exp (in base 2) and the delta term of query rows `offs` of head bh."""
    lse2 = _load(LSE + bh * T + offs, offs < T, MASK) * LOG2E
    delta = _load(DELTA + bh * T + offs, offs < T, MASK)
    return lse2, delta


@triton.jit
def _masked(
    x, owned, walked, T, fill, CAUSAL: tl.constexpr, OWN_KEYS: tl.constexpr, MASK: tl.constexpr
):
    """`x` over an (owned, walked) tile with `fill` where the (query, key) pair stays out of the
    softmax: the walked index past the sequence or, when causal, the key after the query."""
    if MASK:
        valid = walked[None, :] < T
        if CAUSAL:
            if OWN_KEYS:
                valid = valid & (owned[:, None] <= walked[None, :])
            else:
                valid = valid & (walked[None, :] <= owned[:, None])
        x = tl.where(valid, x, fill)
    return x


@triton.jit
def _seed(SEED, DROPOUT: tl.constexpr):
    """The dropout seed (read from device memory, so drawing it needs no host sync); 0 without."""
    seed = 0
    if DROPOUT:
        seed = tl.load(SEED)
    return seed


@triton.jit
def _keep(seed, bh, T, rows, cols, dropout_p):
    """Dropout keep-bits for attention elements (query rows, key cols) of head bh; they broadcast."""
    counters = (bh * T + rows.to(tl.int64)) * T + cols.to(tl.int64)
    return tl.rand(seed, counters) >= dropout_p


@triton.jit
def _phase(phase: tl.constexpr, a, b, c, d):
    """[lo, hi) of walk phase 0 (masked head [a, b)), 1 (unmasked [b, c)) or 2 (masked tail to d)."""
    if phase == 0:
        lo = a
        hi = tl.minimum(b, d)
    elif phase == 1:
        lo = b
        hi = c
    else:
        lo = tl.maximum(b, c)
        hi = d
    return lo, hi


@triton.jit
def _query_block(
    Q,
    H,
    T,
    stride_ib,
    stride_ih,
    stride_it,
    stride_ob,
    stride_oh,
    HEAD_DIM: tl.constexpr,
    CAUSAL: tl.constexpr,
    WIDE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """The scaffolding of a program owning a query tile (forward, dQ): (bh, input offset, output
    offset, the tile's offsets, its q rows, and the bounds a, b, c, d of its three walk phases).

    No masked head; causal: the keys left of the block unmasked, the diagonal masked; else a masked
    sequence end.
    """
    # the diagonal starts at a multiple of BLOCK_M, which must be a key-block boundary
    tl.static_assert(BLOCK_M % BLOCK_N == 0)
    # causal blocks near the end of the sequence have the most work: schedule them first
    bh, in_off, out_off, start_m, offs_m = _program(
        H, stride_ib, stride_ih, stride_ob, stride_oh, BLOCK_M, True
    )
    q = _load_rows(Q + in_off, offs_m, stride_it, T, HEAD_DIM, False, WIDE, True)
    if CAUSAL:
        c = start_m
        d = tl.minimum(start_m + BLOCK_M, T)
    else:
        c = (T // BLOCK_N) * BLOCK_N
        d = T
    return bh, in_off, out_off, offs_m, q, 0, 0, c, d


@triton.autotune(**_tuning("attention_forward"))
@triton.jit
def _attn_fwd_kernel(
    Q, K, V, O, LSE, SEED,
    stride_ib, stride_ih, stride_it, stride_ob, stride_oh, stride_ot,
    H, T, SEQ_BUCKET, softmax_scale, dropout_p,
    HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr, WIDE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Output rows and log-sum-exp of one query block (online softmax over key blocks)."""
    bh, in_off, out_off, offs_m, q, a, b, c, d = _query_block(
        Q, H, T, stride_ib, stride_ih, stride_it, stride_ob, stride_oh,
        HEAD_DIM, CAUSAL, WIDE, BLOCK_M, BLOCK_N,
    )  # fmt: skip
    seed = _seed(SEED, DROPOUT)
    qk_scale = softmax_scale * LOG2E
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for phase in tl.static_range(3):
        MASK = phase != 1  # constexpr: the head and tail phases are masked
        lo, hi = _phase(phase, a, b, c, d)
        for start_n in range(lo, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            kt = _load_rows(K + in_off, offs_n, stride_it, T, HEAD_DIM, True, WIDE, MASK)
            s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
            s = _masked(s, offs_m, offs_n, T, float("-inf"), CAUSAL, False, MASK)
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.exp2(s - m_new[:, None])
            alpha = tl.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None]
            if DROPOUT:
                keep = _keep(seed, bh, T, offs_m[:, None], offs_n[None, :], dropout_p)
                p = tl.where(keep, p, 0.0)
            v = _load_rows(V + in_off, offs_n, stride_it, T, HEAD_DIM, False, WIDE, MASK)
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
            m_i = m_new

    out = acc / l_i[:, None]
    if DROPOUT:
        out = out / (1.0 - dropout_p)
    _store_rows(O + out_off, offs_m, stride_ot, T, out, HEAD_DIM, WIDE)
    lse = (m_i + tl.log2(l_i)) * LN2
    tl.store(LSE + bh * T + offs_m, lse, mask=offs_m < T)


@triton.jit
def _attn_bwd_delta_kernel(
    O, DO, DELTA, stride_ob, stride_oh, stride_ot, H, T,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """delta_i = sum_d out_id * dout_id: the row term of the softmax backward (dropout included)."""
    bh, _, out_off, _, offs_m = _program(H, 0, 0, stride_ob, stride_oh, BLOCK_M, False)
    o = _load_rows(O + out_off, offs_m, stride_ot, T, HEAD_DIM, False, True, True)
    do = _load_rows(DO + out_off, offs_m, stride_ot, T, HEAD_DIM, False, True, True)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh * T + offs_m, delta, mask=offs_m < T)


@triton.autotune(**_tuning("attention_backward_kv"))
@triton.jit
def _attn_bwd_kv_kernel(
    Q, K, V, DO, DK, DV, LSE, DELTA, SEED,
    stride_ib, stride_ih, stride_it, stride_ob, stride_oh, stride_ot,
    H, T, SEQ_BUCKET, softmax_scale, dropout_p,
    HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr, WIDE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """dK, dV of one key block, accumulated over query blocks in transposed (key, query) tiles."""
    # the diagonal starts at a multiple of BLOCK_N, which must be a query-block boundary
    tl.static_assert(BLOCK_N % BLOCK_M == 0)
    # key blocks near the start have the most (causal) queries and come first in grid order
    bh, in_off, out_off, start_n, offs_n = _program(
        H, stride_ib, stride_ih, stride_ob, stride_oh, BLOCK_N, False
    )
    k = _load_rows(K + in_off, offs_n, stride_it, T, HEAD_DIM, False, WIDE, True)
    v = _load_rows(V + in_off, offs_n, stride_it, T, HEAD_DIM, False, WIDE, True)
    seed = _seed(SEED, DROPOUT)
    qk_scale = softmax_scale * LOG2E
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    if CAUSAL:
        # queries on the diagonal need the causal mask, those below it only the sequence end
        a = start_n
        b = start_n + BLOCK_N
    else:
        a = 0
        b = 0
    c = (T // BLOCK_M) * BLOCK_M
    for phase in tl.static_range(3):
        MASK = phase != 1  # constexpr: the head and tail phases are masked
        lo, hi = _phase(phase, a, b, c, T)
        for start_m in range(lo, hi, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            qt = _load_rows(Q + in_off, offs_m, stride_it, T, HEAD_DIM, True, WIDE, MASK)
            do = _load_rows(DO + out_off, offs_m, stride_ot, T, HEAD_DIM, False, WIDE, MASK)
            lse2, delta = _row_stats(LSE, DELTA, bh, offs_m, T, MASK)
            pt = tl.exp2(tl.dot(k, qt, input_precision=PRECISION) * qk_scale - lse2[None, :])
            pt = _masked(pt, offs_n, offs_m, T, 0.0, CAUSAL, True, MASK)
            dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)
            if DROPOUT:
                keep = _keep(seed, bh, T, offs_m[None, :], offs_n[:, None], dropout_p)
                inv_keep = 1.0 / (1.0 - dropout_p)
                pt_kept = tl.where(keep, pt * inv_keep, 0.0)
                dpt = tl.where(keep, dpt * inv_keep, 0.0)
            else:
                pt_kept = pt
            dv = tl.dot(pt_kept.to(do.dtype), do, dv, input_precision=PRECISION)
            dst = pt * (dpt - delta[None, :])
            dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), dk, input_precision=PRECISION)

    _store_rows(DK + out_off, offs_n, stride_ot, T, dk * softmax_scale, HEAD_DIM, WIDE)
    _store_rows(DV + out_off, offs_n, stride_ot, T, dv, HEAD_DIM, WIDE)


@triton.autotune(**_tuning("attention_backward_q"))
@triton.jit
def _attn_bwd_q_kernel(
    Q, K, V, DO, DQ, LSE, DELTA, SEED,
    stride_ib, stride_ih, stride_it, stride_ob, stride_oh, stride_ot,
    H, T, SEQ_BUCKET, softmax_scale, dropout_p,
    HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr, WIDE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """dQ of one query block, accumulated over key blocks."""
    bh, in_off, out_off, offs_m, q, a, b, c, d = _query_block(
        Q, H, T, stride_ib, stride_ih, stride_it, stride_ob, stride_oh,
        HEAD_DIM, CAUSAL, WIDE, BLOCK_M, BLOCK_N,
    )  # fmt: skip
    do = _load_rows(DO + out_off, offs_m, stride_ot, T, HEAD_DIM, False, WIDE, True)
    lse2, delta = _row_stats(LSE, DELTA, bh, offs_m, T, True)
    seed = _seed(SEED, DROPOUT)
    qk_scale = softmax_scale * LOG2E
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for phase in tl.static_range(3):
        MASK = phase != 1  # constexpr: the head and tail phases are masked
        lo, hi = _phase(phase, a, b, c, d)
        for start_n in range(lo, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            kt = _load_rows(K + in_off, offs_n, stride_it, T, HEAD_DIM, True, WIDE, MASK)
            vt = _load_rows(V + in_off, offs_n, stride_it, T, HEAD_DIM, True, WIDE, MASK)
            p = tl.exp2(tl.dot(q, kt, input_precision=PRECISION) * qk_scale - lse2[:, None])
            p = _masked(p, offs_m, offs_n, T, 0.0, CAUSAL, False, MASK)
            dp = tl.dot(do, vt, input_precision=PRECISION)
            if DROPOUT:
                keep = _keep(seed, bh, T, offs_m[:, None], offs_n[None, :], dropout_p)
                dp = tl.where(keep, dp * (1.0 / (1.0 - dropout_p)), 0.0)
            ds = p * (dp - delta[:, None])
            dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq, input_precision=PRECISION)

    _store_rows(DQ + out_off, offs_m, stride_ot, T, dq * softmax_scale, HEAD_DIM, WIDE)


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


def _strides(group: str, t: torch.Tensor) -> dict[str, int]:
    """The (batch, head, seq) stride arguments of tensor group `group` ("i" inputs, "o" outputs),
    read from `t`, a (B, H, T, D) tensor of that group with unit head_dim stride."""
    return {f"stride_{group}{axis}": t.stride(i) for i, axis in enumerate("bht")}


def _needs_wide_rows(*tensors: torch.Tensor) -> bool:
    """Whether an offset inside one (batch, head) slice can pass int32: seq * row stride >= 2**31."""
    return any(t.shape[2] * t.stride(2) + t.shape[3] >= 2**31 for t in tensors)


def _grid(owned_tile: str, seq_len: int, batch_heads: int):
    """Launch grid: one program per owned tile of the sequence, per (batch, head)."""
    return lambda meta: (triton.cdiv(seq_len, meta[owned_tile]), batch_heads)


def _shared(
    q: torch.Tensor,
    out: torch.Tensor,
    seed: torch.Tensor | None,
    lse: torch.Tensor,
    causal: bool,
    softmax_scale: float,
    dropout_p: float,
) -> dict:
    """The launch arguments every attention kernel takes, for inputs like `q` and outputs like `out`."""
    _, heads, seq_len, head_dim = q.shape
    return {
        "LSE": lse,
        "SEED": seed if seed is not None else lse,
        **_strides("i", q),
        **_strides("o", out),
        "H": heads,
        "T": seq_len,
        "SEQ_BUCKET": triton.next_power_of_2(seq_len),
        "softmax_scale": softmax_scale,
        "dropout_p": dropout_p,
        "HEAD_DIM": head_dim,
        "CAUSAL": causal,
        "DROPOUT": dropout_p > 0.0,
        "PRECISION": dot_precision(q.dtype),
        "WIDE": _needs_wide_rows(q, out),
    }


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
    """Fill `out` (B, H, T, D) and `lse` (B, H, T) fp32 with the attention forward.

    q, k, v share strides; the last one of every tensor is 1.
    """
    batch, heads, seq_len, _ = q.shape
    shared = _shared(q, out, seed, lse, causal, softmax_scale, dropout_p)
    _attn_fwd_kernel[_grid("BLOCK_M", seq_len, batch * heads)](Q=q, K=k, V=v, O=out, **shared)


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
    """Fill dq, dk, dv (B, H, T, D) with the attention backward, recomputing P from `lse`.

    q, k, v share strides, and so do grad_out, out, dq, dk, dv; the last one of every tensor is 1.
    """
    batch, heads, seq_len, head_dim = q.shape
    delta = torch.empty_like(lse)
    _attn_bwd_delta_kernel[(triton.cdiv(seq_len, DELTA_BLOCK), batch * heads)](
        O=out, DO=grad_out, DELTA=delta, H=heads, T=seq_len, HEAD_DIM=head_dim,
        BLOCK_M=DELTA_BLOCK, **_strides("o", out),
    )  # fmt: skip
    shared = _shared(q, out, seed, lse, causal, softmax_scale, dropout_p)
    tensors = {"Q": q, "K": k, "V": v, "DO": grad_out, "DELTA": delta, **shared}
    _attn_bwd_kv_kernel[_grid("BLOCK_N", seq_len, batch * heads)](DK=dk, DV=dv, **tensors)
    _attn_bwd_q_kernel[_grid("BLOCK_M", seq_len, batch * heads)](DQ=dq, **tensors)


def dropout_mask(mask: torch.Tensor, seed: torch.Tensor, dropout_p: float) -> None:
    """Fill the contiguous int8 tensor `mask` (B, H, T, T) with the kernels' keep-bits (1 = kept)."""
    batch, heads, seq_len, _ = mask.shape
    block = min(triton.next_power_of_2(seq_len), 1024)
    _dropout_mask_kernel[(seq_len, batch * heads)](
        MASK=mask, SEED=seed, T=seq_len, dropout_p=dropout_p, BLOCK=block
    )
