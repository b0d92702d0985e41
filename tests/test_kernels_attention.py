"""flash_attention against the plain PyTorch attention (and an fp64 run of it).

On the CPU these run under the Triton interpreter (see tests/kernels_helpers.py), in fp32 only and at
small shapes; the gpu-marked tests repeat the checks in bf16/fp16 at the 25M model's shapes.
"""

from __future__ import annotations

import math

import pytest
import torch
from smallgpt.kernels import is_available
from smallgpt.kernels._support import triton_importable
from smallgpt.kernels.attention import (
    attention_dropout_mask,
    attention_reference,
    flash_attention,
)

from tests.kernels_helpers import (
    KERNEL_DEVICE,
    assert_within_torch_error,
    attention_scales,
    gpu,
    needs_kernels,
    randn,
)


def _qkv(batch, heads, seq, head_dim, dtype, seed, device=KERNEL_DEVICE):
    return [
        randn(
            batch, heads, seq, head_dim, seed=seed + i, dtype=dtype, device=device
        ).requires_grad_()
        for i in range(3)
    ]


def _check_against_reference(
    q, k, v, grad_out, *, causal, softmax_scale=None, dropout_p=0.0, seed=None
):
    """Output and q/k/v gradients within 2x torch's own error (fp64 reference, same dropout mask)."""
    dtype = q.dtype
    mask = None
    if dropout_p > 0:
        mask = attention_dropout_mask(*q.shape[:3], dropout_p=dropout_p, seed=seed, device=q.device)
    options = {"causal": causal, "softmax_scale": softmax_scale, "dropout_p": dropout_p}
    out = flash_attention(q, k, v, seed=seed, **options)
    ref = attention_reference(q, k, v, dropout_mask=mask, **options)
    exact_inputs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    exact = attention_reference(*exact_inputs, dropout_mask=mask, **options)

    ours = (out, *torch.autograd.grad(out, (q, k, v), grad_out))
    theirs = (ref, *torch.autograd.grad(ref, (q, k, v), grad_out))
    exacts = (exact, *torch.autograd.grad(exact, exact_inputs, grad_out.double()))
    scales = attention_scales(
        q, k, v, grad_out, softmax_scale=_softmax_scale(q, softmax_scale), dropout_p=dropout_p
    )
    for name, a, b, c in zip(("out", "dq", "dk", "dv"), ours, theirs, exacts):
        assert_within_torch_error(name, a, b, c, dtype, scale=scales[name])


def _softmax_scale(q, softmax_scale=None):
    return 1 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale


@needs_kernels
@pytest.mark.parametrize(
    ("batch", "heads", "seq", "head_dim", "causal"),
    [
        (2, 2, 1, 32, True),
        (2, 2, 17, 32, True),
        (2, 2, 77, 32, True),
        (1, 3, 77, 64, True),
        (1, 1, 64, 16, True),
        (1, 1, 40, 128, True),
        (1, 2, 17, 32, False),
        (2, 1, 77, 64, False),
    ],
)
def test_output_and_gradients_match_reference(batch, heads, seq, head_dim, causal):
    q, k, v = _qkv(batch, heads, seq, head_dim, torch.float32, seed=seq + head_dim)
    grad_out = randn(batch, heads, seq, head_dim, seed=7, dtype=torch.float32)
    _check_against_reference(q, k, v, grad_out, causal=causal)


@pytest.mark.parametrize("seq", [1, 17])
def test_tolerance_passes_rounding_of_a_zero_dq_and_fails_a_wrong_dq(seq):
    # With one key the exact dq is zero; fp32 rounding of dP - delta must pass, a real error must not.
    q, k, v = _qkv(2, 2, seq, 32, torch.float32, seed=5, device="cpu")
    grad_out = randn(2, 2, seq, 32, seed=6, dtype=torch.float32, device="cpu")
    exact_inputs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    (exact,) = torch.autograd.grad(
        attention_reference(*exact_inputs), exact_inputs[0], grad_out.double()
    )
    (theirs,) = torch.autograd.grad(attention_reference(q, k, v), q, grad_out)
    scale = attention_scales(q, k, v, grad_out, softmax_scale=_softmax_scale(q))["dq"]
    rounding = exact.float() + 3e-7 * torch.sign(torch.randn(exact.shape))
    assert_within_torch_error("dq", rounding, theirs, exact, torch.float32, scale=scale)
    wrong = exact.float() + 1e-3 * grad_out  # e.g. a missing or doubled term
    with pytest.raises(AssertionError, match="dq: error"):
        assert_within_torch_error("dq", wrong, theirs, exact, torch.float32, scale=scale)


@needs_kernels
def test_softmax_scale_argument_is_applied():
    q, k, v = _qkv(1, 2, 33, 32, torch.float32, seed=3)
    grad_out = randn(1, 2, 33, 32, seed=8, dtype=torch.float32)
    _check_against_reference(q, k, v, grad_out, causal=True, softmax_scale=0.37)


def _check_fused_qkv(batch, seq, heads, head_dim, dtype, device):
    """q, k, v as strided views of one (B, T, 3*H*D) projection, like a GPT block makes them."""
    qkv = randn(batch, seq, 3 * heads * head_dim, seed=11, dtype=dtype, device=device)
    qkv.requires_grad_()
    q, k, v = qkv.view(batch, seq, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    assert not q.is_contiguous()
    grad_out = randn(batch, heads, seq, head_dim, seed=12, dtype=dtype, device=device)
    out = flash_attention(q, k, v)
    (grad_qkv,) = torch.autograd.grad(out, qkv, grad_out)

    exact_qkv = qkv.detach().double().requires_grad_()
    eq, ek, ev = exact_qkv.view(batch, seq, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    exact = attention_reference(eq, ek, ev)
    (exact_grad,) = torch.autograd.grad(exact, exact_qkv, grad_out.double())
    ref = attention_reference(q, k, v)
    (ref_grad,) = torch.autograd.grad(ref, qkv, grad_out)
    scales = attention_scales(q, k, v, grad_out, softmax_scale=_softmax_scale(q))
    assert_within_torch_error("out", out, ref, exact, dtype, scale=scales["out"])
    assert_within_torch_error(
        "dqkv", grad_qkv, ref_grad, exact_grad, dtype, scale=max(scales.values())
    )


@needs_kernels
def test_fused_qkv_views_work_through_strides():
    _check_fused_qkv(2, 45, 3, 32, torch.float32, KERNEL_DEVICE)


@needs_kernels
def test_broadcast_upstream_gradient_from_sum():
    # out.sum() hands backward an expanded gradient whose strides are all zero
    q, k, v = _qkv(1, 2, 30, 32, torch.float32, seed=21)
    grads = torch.autograd.grad(flash_attention(q, k, v).sum(), (q, k, v))
    exact_inputs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    exact_grads = torch.autograd.grad(attention_reference(*exact_inputs).sum(), exact_inputs)
    ref_grads = torch.autograd.grad(attention_reference(q, k, v).sum(), (q, k, v))
    ones = torch.ones_like(q)
    scales = attention_scales(q, k, v, ones, softmax_scale=_softmax_scale(q))
    for name, a, b, c in zip(("dq", "dk", "dv"), grads, ref_grads, exact_grads):
        assert_within_torch_error(name, a, b, c, torch.float32, scale=scales[name])


@needs_kernels
def test_int64_row_offsets_are_chosen_when_a_slice_passes_int32():
    from smallgpt.kernels import _attention_triton

    narrow = torch.empty_strided((1, 1, 40000, 64), (0, 0, 3 * 64, 1), device="meta")
    wide = torch.empty_strided((1, 1, 40000, 64), (0, 0, 60000, 1), device="meta")
    assert not _attention_triton._needs_wide_rows(narrow)
    assert _attention_triton._needs_wide_rows(narrow, wide)


@needs_kernels
def test_int64_row_offsets_give_the_same_results(monkeypatch):
    from smallgpt.kernels import _attention_triton

    q, k, v = _qkv(1, 2, 40, 32, torch.float32, seed=80)

    def run():
        out = flash_attention(q, k, v, dropout_p=0.2, seed=9)
        return (out, *torch.autograd.grad(out.square().sum(), (q, k, v)))

    narrow = run()
    monkeypatch.setattr(_attention_triton, "_needs_wide_rows", lambda *tensors: True)
    for a, b in zip(narrow, run()):
        assert torch.equal(a, b)


@needs_kernels
def test_output_is_laid_out_batch_seq_heads():
    q, k, v = _qkv(2, 3, 9, 32, torch.float32, seed=5)
    out = flash_attention(q, k, v)
    # (B, H, T, D) stored as (B, T, H, D): merging heads back is a free view
    assert out.transpose(1, 2).is_contiguous()


@needs_kernels
@pytest.mark.parametrize(
    ("batch", "heads", "seq", "head_dim", "causal", "dropout_p"),
    [(2, 2, 77, 32, True, 0.2), (1, 2, 33, 64, False, 0.5), (1, 1, 1, 32, True, 0.3)],
)
def test_dropout_matches_reference_with_the_kernels_mask(
    batch, heads, seq, head_dim, causal, dropout_p
):
    q, k, v = _qkv(batch, heads, seq, head_dim, torch.float32, seed=31)
    grad_out = randn(batch, heads, seq, head_dim, seed=32, dtype=torch.float32)
    _check_against_reference(q, k, v, grad_out, causal=causal, dropout_p=dropout_p, seed=1234)


@needs_kernels
@pytest.mark.parametrize("dropout_p", [0.1, 0.5])
def test_dropout_drops_the_requested_fraction(dropout_p):
    mask = attention_dropout_mask(2, 4, 96, dropout_p=dropout_p, seed=99, device=KERNEL_DEVICE)
    dropped = 1.0 - mask.float().mean().item()
    sigma = math.sqrt(dropout_p * (1 - dropout_p) / mask.numel())
    assert abs(dropped - dropout_p) < 5 * sigma


@needs_kernels
def test_dropout_masks_depend_on_seed_only():
    a = attention_dropout_mask(1, 2, 40, dropout_p=0.3, seed=1, device=KERNEL_DEVICE)
    b = attention_dropout_mask(1, 2, 40, dropout_p=0.3, seed=1, device=KERNEL_DEVICE)
    c = attention_dropout_mask(1, 2, 40, dropout_p=0.3, seed=2, device=KERNEL_DEVICE)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # heads draw independent bits
    assert not torch.equal(a[0, 0], a[0, 1])


@needs_kernels
def test_dropout_preserves_the_expected_output():
    # 64 heads see the same q, k, v but independent masks: their mean estimates E[out]
    heads, seq, head_dim, p = 64, 17, 32, 0.3
    q, k, v = (
        randn(1, 1, seq, head_dim, seed=40 + i, dtype=torch.float32).expand(1, heads, -1, -1)
        for i in range(3)
    )
    with torch.no_grad():
        samples = flash_attention(q, k, v, dropout_p=p, seed=5)[0]
    expected = attention_reference(q[:, :1], k[:, :1], v[:, :1])[0, 0]
    standard_error = samples.std(dim=0) / math.sqrt(heads)
    z = (samples.mean(dim=0) - expected).abs() / (standard_error + 1e-6)
    assert z.max().item() < 5.5


@needs_kernels
def test_seed_none_follows_torch_manual_seed():
    q, k, v = _qkv(1, 2, 20, 32, torch.float32, seed=50)
    with torch.no_grad():
        torch.manual_seed(0)
        first = flash_attention(q, k, v, dropout_p=0.4)
        second = flash_attention(q, k, v, dropout_p=0.4)
        torch.manual_seed(0)
        replay = flash_attention(q, k, v, dropout_p=0.4)
    assert torch.equal(first, replay)
    assert not torch.equal(first, second)


@needs_kernels
def test_custom_op_registration_passes_opcheck():
    q, k, v = _qkv(1, 2, 18, 32, torch.float32, seed=60)
    seed = torch.tensor([3], device=KERNEL_DEVICE)
    torch.library.opcheck(
        torch.ops.smallgpt.flash_attention.default, (q, k, v, seed, True, 0.2, 0.25)
    )


@needs_kernels
def test_compiles_into_one_graph():
    q, k, v = _qkv(1, 2, 19, 32, torch.float32, seed=70)

    def loss(q, k, v):
        return flash_attention(q, k, v, dropout_p=0.1, seed=4).square().sum()

    eager = torch.autograd.grad(loss(q, k, v), (q, k, v))
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    for a, b in zip(eager, torch.autograd.grad(compiled(q, k, v), (q, k, v))):
        torch.testing.assert_close(a, b)


@needs_kernels
@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"head_dim": 48}, ValueError),
        ({"k_seq": 5}, ValueError),
        ({"dtype": torch.float64}, TypeError),
        ({"v_dtype": torch.float16}, TypeError),
        ({"dropout_p": 1.0}, ValueError),
        ({"softmax_scale": -1.0}, ValueError),
        ({"seed": -3, "dropout_p": 0.1}, ValueError),
    ],
)
def test_bad_arguments_raise(change, error):
    head_dim, dtype = change.get("head_dim", 32), change.get("dtype", torch.float32)
    q = randn(1, 2, 6, head_dim, seed=0, dtype=dtype)
    k = randn(1, 2, change.get("k_seq", 6), head_dim, seed=1, dtype=dtype)
    v = randn(1, 2, 6, head_dim, seed=2, dtype=change.get("v_dtype", dtype))
    options = {key: change[key] for key in ("dropout_p", "softmax_scale", "seed") if key in change}
    with pytest.raises(error):
        flash_attention(q, k, v, **options)


def test_non_tensor_input_raises_type_error():
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        flash_attention([[1.0]], torch.zeros(1), torch.zeros(1))


def test_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not is_available("cpu")
    q = torch.zeros(1, 1, 4, 32)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        flash_attention(q, q, q)


def test_is_available_follows_the_interpreter_switch(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert is_available("cpu") == triton_importable()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not is_available("cpu")
    assert not is_available("meta")


# --- GPU: half precision at the 25M model's shapes ---------------------------------------------


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_matches_reference_at_model_shapes(dtype):
    q, k, v = _qkv(8, 8, 1024, 64, dtype, seed=100, device="cuda")
    grad_out = randn(8, 8, 1024, 64, seed=101, dtype=dtype, device="cuda")
    _check_against_reference(q, k, v, grad_out, causal=True)


@gpu
@pytest.mark.parametrize(("seq", "head_dim"), [(1000, 32), (517, 128)])
def test_half_precision_odd_lengths_and_head_dims(seq, head_dim):
    q, k, v = _qkv(2, 4, seq, head_dim, torch.bfloat16, seed=110, device="cuda")
    grad_out = randn(2, 4, seq, head_dim, seed=111, dtype=torch.bfloat16, device="cuda")
    _check_against_reference(q, k, v, grad_out, causal=True)


@gpu
def test_half_precision_dropout_matches_reference_with_the_kernels_mask():
    q, k, v = _qkv(2, 8, 1024, 64, torch.bfloat16, seed=120, device="cuda")
    grad_out = randn(2, 8, 1024, 64, seed=121, dtype=torch.bfloat16, device="cuda")
    _check_against_reference(q, k, v, grad_out, causal=True, dropout_p=0.1, seed=77)


@gpu
def test_half_precision_fused_qkv_views():
    _check_fused_qkv(4, 1000, 8, 64, torch.bfloat16, "cuda")


@gpu
def test_compiles_with_inductor_on_cuda():
    q, k, v = _qkv(2, 8, 256, 64, torch.bfloat16, seed=130, device="cuda")

    def loss(q, k, v):
        return flash_attention(q, k, v).float().square().sum()

    eager = torch.autograd.grad(loss(q, k, v), (q, k, v))
    compiled = torch.compile(loss, fullgraph=True)
    for a, b in zip(eager, torch.autograd.grad(compiled(q, k, v), (q, k, v))):
        torch.testing.assert_close(a, b)
