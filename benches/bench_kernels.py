"""Triton kernels against their peers at the 25M model's shapes (CUDA only).

Shapes: batch 8 and 32, 8 heads, head_dim 64, seq 1024, embed 512, vocab 10000 (LM head padded to
10048 rows), bf16. Every figure is a ratio against a peer timed in the same run, on the same inputs:
- attention forward and forward+backward vs F.scaled_dot_product_attention with the flash backend
  (targets: >= 0.9x forward, >= 0.8x forward+backward), q/k/v as views of a fused QKV projection;
- linear_cross_entropy peak memory and speed vs F.cross_entropy(hidden @ weight.T) (targets: <= 1/4
  of the memory, >= 1.0x the speed), forward+backward;
- cross_entropy forward+backward bandwidth as a fraction of the GPU's peak memory bandwidth, and its
  speed vs F.cross_entropy and (when importable) Liger-Kernel's LigerCrossEntropyLoss.
Timing: CUDA events around each of 30 calls after 5 warm-up calls (the first compiles and autotunes);
the median is the figure in extra_info, for both sides. pytest-benchmark's own columns time smallgpt's
call with a synchronisation after each. Memory: torch.cuda.max_memory_allocated above what was
allocated before.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from pytest_benchmark.fixture import BenchmarkFixture
from smallgpt.kernels.attention import flash_attention
from smallgpt.kernels.cross_entropy import cross_entropy, linear_cross_entropy
from torch.nn.attention import SDPBackend, sdpa_kernel

from benches.report import report

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="kernel benchmarks need a CUDA device"
)

HEADS, HEAD_DIM, SEQ, EMBED = 8, 64, 1024, 512
VOCAB, PADDED_VOCAB = 10000, 10048
WARMUP, ITERS = 5, 30
BATCHES = [8, 32]


def _median_ms(fn: Callable[[], object], warmup: int = WARMUP, iters: int = ITERS) -> float:
    """Median GPU time of one call of `fn`, in milliseconds (events queued back to back)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        for _ in range(iters)
    ]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events)


def _time_ours(benchmark: BenchmarkFixture, fn: Callable[[], object]) -> float:
    """Times `fn` for pytest-benchmark (each call synchronised, so its columns are whole calls as
    the host sees them), then returns its CUDA-event median in ms, measured as the peer's is."""

    def synced() -> None:
        fn()
        torch.cuda.synchronize()

    benchmark.pedantic(synced, rounds=ITERS, warmup_rounds=WARMUP)
    return _median_ms(fn)


def _peak_mib(fn: Callable[[], object]) -> float:
    """Peak memory `fn` allocates beyond what is already allocated, in MiB (fn warmed up first)."""
    fn()
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _peak_bandwidth_gbs() -> float | None:
    """Theoretical DRAM bandwidth (double data rate x bus width), or None if torch cannot tell."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if not clock_khz or not bus_bits:
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9


# --- attention ----------------------------------------------------------------------------------


def _fused_qkv(batch: int) -> tuple[torch.Tensor, ...]:
    """q, k, v as (B, H, T, D) views of one (B, T, 3, H, D) projection, as the model makes them."""
    qkv = torch.randn(batch, SEQ, 3, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    qkv.requires_grad_()
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    return qkv, q, k, v


# (pass, dropout_p, target); the forward alone is timed without dropout only.
ATTENTION_CASES = [("fwd", 0.0, ">= 0.9"), ("fwd+bwd", 0.0, ">= 0.8"), ("fwd+bwd", 0.1, None)]


@pytest.mark.benchmark(group="attention")
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(
    ("pass_", "dropout_p", "target"), ATTENTION_CASES, ids=["fwd", "fwd+bwd", "fwd+bwd-dropout"]
)
def test_attention_vs_sdpa_flash(benchmark, batch, pass_, dropout_p, target):
    qkv, q, k, v = _fused_qkv(batch)
    grad_out = torch.randn(batch, HEADS, SEQ, HEAD_DIM, device="cuda", dtype=torch.bfloat16)

    def ours():
        return flash_attention(q, k, v, causal=True, dropout_p=dropout_p)

    def sdpa():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)

    def as_pass(attend):
        if pass_ == "fwd":
            return attend
        return lambda: torch.autograd.grad(attend(), qkv, grad_out)

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.set_grad_enabled(pass_ != "fwd"):
        ours_ms = _time_ours(benchmark, as_pass(ours))
        sdpa_ms = _median_ms(as_pass(sdpa))

    # Causal attention's matmul FLOPs; the backward does about 2.5x the forward's.
    flops = 4 * batch * HEADS * SEQ * SEQ * HEAD_DIM / 2 * (1.0 if pass_ == "fwd" else 3.5)
    report(
        benchmark,
        ours_ms,
        "ms",
        {"sdpa-flash": sdpa_ms},
        target=target,
        ours_tflops=flops / ours_ms / 1e9,
        batch=batch,
        heads=HEADS,
        seq=SEQ,
        head_dim=HEAD_DIM,
        dtype="bf16",
    )


# --- linear cross-entropy -----------------------------------------------------------------------


@pytest.mark.benchmark(group="linear_cross_entropy")
@pytest.mark.parametrize("batch", BATCHES)
def test_linear_cross_entropy_vs_unfused_head(benchmark, batch):
    tokens = batch * SEQ
    hidden = torch.randn(tokens, EMBED, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(PADDED_VOCAB, EMBED, device="cuda", dtype=torch.bfloat16) * 0.02
    weight.requires_grad_()
    targets = torch.randint(0, VOCAB, (tokens,), device="cuda")

    def ours():
        loss = linear_cross_entropy(hidden, weight, targets, vocab_size=VOCAB)
        return torch.autograd.grad(loss, (hidden, weight))

    def unfused():
        loss = F.cross_entropy(hidden @ weight[:VOCAB].T, targets)
        return torch.autograd.grad(loss, (hidden, weight))

    mem_ours, mem_unfused = _peak_mib(ours), _peak_mib(unfused)
    ms_ours = _time_ours(benchmark, ours)
    ms_unfused = _median_ms(unfused)
    report(
        benchmark,
        ms_ours,
        "ms",
        {"unfused F.cross_entropy": ms_unfused},
        target=">= 1.0",
        ours_mib=mem_ours,
        unfused_mib=mem_unfused,
        memory_ratio=mem_unfused / mem_ours,
        memory_target=">= 4 (a quarter of the unfused head's memory)",
        tokens=tokens,
        embed=EMBED,
        vocab=VOCAB,
        dtype="bf16",
    )


# --- standalone cross-entropy -------------------------------------------------------------------


def _fresh_logits(tokens: int, count: int) -> list[torch.Tensor]:
    """`count` independent leaves: Liger overwrites its input with the gradient, so none is reused."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    base = torch.randn(tokens, VOCAB, device="cuda", dtype=torch.bfloat16, generator=gen) * 4
    return [base.clone().requires_grad_() for _ in range(count)]


def _step_over(inputs: list[torch.Tensor], loss_fn, targets) -> Callable[[], object]:
    """One forward+backward per call, each on the next of `inputs`."""
    feed = iter(inputs)

    def step():
        logits = next(feed)
        return torch.autograd.grad(loss_fn(logits, targets), logits)

    return step


@pytest.mark.benchmark(group="cross_entropy")
@pytest.mark.parametrize("batch", BATCHES)
def test_cross_entropy_bandwidth(benchmark, batch):
    tokens = batch * SEQ
    targets = torch.randint(0, VOCAB, (tokens,), device="cuda")
    peers = {"torch": lambda x, t: F.cross_entropy(x, t)}
    try:
        from liger_kernel.transformers import LigerCrossEntropyLoss  # optional peer

        peers["liger"] = LigerCrossEntropyLoss()
    except ImportError:
        pass

    # Ours leaves its input alone, so its calls reuse one (the logits are far larger than L2 at
    # both batches); Liger overwrites its input, so each peer call gets a fresh one.
    reused = _fresh_logits(tokens, 1) * (2 * (WARMUP + ITERS))  # _time_ours calls it that often
    ours_ms = _time_ours(benchmark, _step_over(reused, cross_entropy, targets))
    del reused
    peer_ms = {}
    for name, loss_fn in peers.items():
        inputs = _fresh_logits(tokens, WARMUP + ITERS)
        peer_ms[name] = _median_ms(_step_over(inputs, loss_fn, targets))
        del inputs
        torch.cuda.empty_cache()

    # forward reads the logits and writes their gradient, backward reads it and writes the scaled one
    moved_gb = 4 * tokens * VOCAB * 2 / 1e9
    achieved = moved_gb / (ours_ms / 1e3)
    peak = _peak_bandwidth_gbs()
    report(
        benchmark,
        ours_ms,
        "ms",
        peer_ms,
        achieved_gbs=achieved,
        peak_gbs=peak,
        bandwidth_fraction=achieved / peak if peak is not None else None,
        tokens=tokens,
        vocab=VOCAB,
        dtype="bf16",
    )
