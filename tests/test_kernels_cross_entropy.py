"""cross_entropy and linear_cross_entropy against torch.nn.functional.cross_entropy (and fp64).

On the CPU these run under the Triton interpreter (see tests/kernels_helpers.py), in fp32 only and at
small shapes; the gpu-marked tests repeat the checks in bf16 at the 25M model's shapes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from smallgpt.kernels.cross_entropy import cross_entropy, linear_cross_entropy

from tests.kernels_helpers import (
    KERNEL_DEVICE,
    assert_within_torch_error,
    cross_entropy_scales,
    gpu,
    needs_kernels,
    randn,
)


def _targets(n_rows, vocab, *, seed, ignore_index=-100, device=KERNEL_DEVICE):
    """Random class indices in [0, vocab) with every fourth row set to ignore_index."""
    gen = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, vocab, (n_rows,), generator=gen)
    targets[::4] = ignore_index
    return targets.to(device)


def _upstream(loss):
    """A random incoming gradient shaped like the loss (a 0-d one for "mean"/"sum")."""
    return randn(*loss.shape, seed=99, dtype=torch.float32, device=loss.device)


def _torch_loss(logits, targets, vocab_size=None, **options):
    """torch's own cross-entropy over the real vocabulary, in the logits' dtype."""
    if vocab_size is not None:
        logits = logits[:, :vocab_size]
    return F.cross_entropy(logits, targets, **options)


def _scales(logits_bound, logits, targets, upstream, options, ignore_index=None):
    """`cross_entropy_scales` for these logits and targets under `options`."""
    ignore_index = options.get("ignore_index", -100) if ignore_index is None else ignore_index
    return cross_entropy_scales(
        logits_bound,
        logits.shape[-1],
        upstream,
        scored=int((targets != ignore_index).sum()),
        reduction=options.get("reduction", "mean"),
    )


def _linear_scales(hidden, weight, targets, upstream, options):
    """Loss and per-input gradient scales of the fused head: logits are bounded by |h| |w| row norms,
    and d hidden (d weight) sums logit gradients times weight (hidden) entries."""
    bound = hidden.norm(dim=-1).max().item() * weight.norm(dim=-1).max().item()
    loss, grad = _scales(bound, weight.T, targets, upstream, options)
    return loss, {
        "grad_hidden": grad * weight.abs().max().item(),
        "grad_weight": grad * hidden.abs().max().item(),
    }


def _check_cross_entropy(logits, targets, vocab_size=None, **options):
    """Loss and logits gradient within 2x torch's own error; padded columns get zero gradient."""
    dtype = logits.dtype
    logits = logits.detach().requires_grad_()
    loss = cross_entropy(logits, targets, vocab_size=vocab_size, **options)
    upstream = _upstream(loss)
    (grad,) = torch.autograd.grad(loss, logits, upstream)

    theirs = _torch_loss(logits, targets, vocab_size, **options)
    (their_grad,) = torch.autograd.grad(theirs, logits, upstream.to(theirs.dtype))
    exact_logits = logits.detach().double().requires_grad_()
    exact = _torch_loss(exact_logits, targets, vocab_size, **options)
    (exact_grad,) = torch.autograd.grad(exact, exact_logits, upstream.double())

    loss_scale, grad_scale = _scales(logits.abs().max().item(), logits, targets, upstream, options)
    assert loss.dtype == torch.float32
    assert_within_torch_error("loss", loss, theirs, exact, dtype, scale=loss_scale)
    assert_within_torch_error("grad", grad, their_grad, exact_grad, dtype, scale=grad_scale)
    if vocab_size is not None:
        assert torch.count_nonzero(grad[:, vocab_size:]) == 0


def _check_linear(hidden, weight, targets, vocab_size=None, **options):
    """Loss and hidden/weight gradients of the fused head within 2x torch's own error."""
    dtype = hidden.dtype
    hidden = hidden.detach().requires_grad_()
    weight = weight.detach().requires_grad_()
    loss = linear_cross_entropy(hidden, weight, targets, vocab_size=vocab_size, **options)
    upstream = _upstream(loss)
    grads = torch.autograd.grad(loss, (hidden, weight), upstream)

    options.pop("chunk_size", None)
    theirs = _torch_loss(hidden @ weight.T, targets, vocab_size, **options)
    their_grads = torch.autograd.grad(theirs, (hidden, weight), upstream.to(theirs.dtype))
    exact_inputs = [t.detach().double().requires_grad_() for t in (hidden, weight)]
    exact = _torch_loss(exact_inputs[0] @ exact_inputs[1].T, targets, vocab_size, **options)
    exact_grads = torch.autograd.grad(exact, exact_inputs, upstream.double())

    loss_scale, grad_scale = _linear_scales(hidden, weight, targets, upstream, options)
    assert_within_torch_error("loss", loss, theirs, exact, dtype, scale=loss_scale)
    for name, a, b, c in zip(("grad_hidden", "grad_weight"), grads, their_grads, exact_grads):
        assert a.dtype == dtype
        assert_within_torch_error(name, a, b, c, dtype, scale=grad_scale[name])
    if vocab_size is not None:
        assert torch.count_nonzero(grads[1][vocab_size:]) == 0


# --- cross_entropy ------------------------------------------------------------------------------


@needs_kernels
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("vocab", [7, 1000, 3001])
def test_matches_torch_for_every_reduction(reduction, label_smoothing, vocab):
    logits = randn(37, vocab, seed=vocab, dtype=torch.float32) * 3
    targets = _targets(37, vocab, seed=1)
    _check_cross_entropy(logits, targets, reduction=reduction, label_smoothing=label_smoothing)


@needs_kernels
@pytest.mark.parametrize(("columns", "vocab_size"), [(640, 601), (3072, 2999)])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_padded_vocabulary_columns_never_enter_the_softmax(columns, vocab_size, label_smoothing):
    logits = randn(21, columns, seed=2, dtype=torch.float32)
    logits[:, vocab_size:] = 50.0  # would dominate the softmax if it were included
    targets = _targets(21, vocab_size, seed=3)
    _check_cross_entropy(logits, targets, vocab_size=vocab_size, label_smoothing=label_smoothing)


@needs_kernels
def test_custom_ignore_index_that_is_a_valid_class():
    logits = randn(30, 11, seed=4, dtype=torch.float32)
    targets = _targets(30, 11, seed=5, ignore_index=3)
    _check_cross_entropy(logits, targets, ignore_index=3, reduction="mean")


@needs_kernels
def test_int32_targets_give_the_same_loss():
    logits = randn(16, 50, seed=6, dtype=torch.float32)
    targets = _targets(16, 50, seed=7)
    assert torch.equal(cross_entropy(logits, targets), cross_entropy(logits, targets.int()))


@needs_kernels
def test_strided_logits_views():
    wide = randn(19, 300, seed=8, dtype=torch.float32)
    targets = _targets(19, 200, seed=9)
    _check_cross_entropy(wide[:, :200], targets)  # row stride 300
    _check_cross_entropy(wide.T.contiguous().T[:, :200], targets)  # column-major


@needs_kernels
def test_all_targets_ignored_gives_nan_mean_and_zero_gradient_like_torch():
    logits = randn(8, 10, seed=10, dtype=torch.float32).requires_grad_()
    targets = torch.full((8,), -100, device=KERNEL_DEVICE)
    loss = cross_entropy(logits, targets)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isnan(loss)
    assert torch.count_nonzero(grad) == 0


@needs_kernels
@pytest.mark.parametrize("bad_target", [10, -1])
def test_out_of_range_target_gives_nan_not_a_silent_loss(bad_target):
    logits = randn(4, 10, seed=11, dtype=torch.float32)
    targets = torch.tensor([1, bad_target, 2, 3], device=KERNEL_DEVICE)
    losses = cross_entropy(logits, targets, reduction="none")
    assert torch.isnan(losses[1])
    assert torch.isfinite(losses[[0, 2, 3]]).all()


@needs_kernels
def test_backward_twice_with_retained_graph_gives_the_same_gradient():
    logits = randn(12, 40, seed=12, dtype=torch.float32).requires_grad_()
    loss = cross_entropy(logits, _targets(12, 40, seed=13)) * 3
    first = torch.autograd.grad(loss, logits, retain_graph=True)[0]
    second = torch.autograd.grad(loss, logits)[0]
    assert torch.equal(first, second)


@needs_kernels
def test_no_grad_gives_the_same_loss():
    logits = randn(12, 40, seed=14, dtype=torch.float32).requires_grad_()
    targets = _targets(12, 40, seed=15)
    with torch.no_grad():
        inference = cross_entropy(logits, targets, label_smoothing=0.1)
    assert torch.equal(inference, cross_entropy(logits, targets, label_smoothing=0.1).detach())


@needs_kernels
def test_cross_entropy_custom_op_passes_opcheck():
    # column-major logits: the op copies them, and its fake must promise the same output layout
    logits = randn(33, 9, seed=16, dtype=torch.float32).T.requires_grad_()
    targets = _targets(9, 30, seed=17)
    torch.library.opcheck(
        torch.ops.smallgpt.cross_entropy.default, (logits, targets, -100, "mean", 0.1, 30, True)
    )


@needs_kernels
def test_cross_entropy_compiles_into_one_graph():
    logits = randn(9, 33, seed=18, dtype=torch.float32).requires_grad_()
    targets = _targets(9, 33, seed=19)

    def loss(logits):
        return cross_entropy(logits, targets, label_smoothing=0.1) * 2

    eager = torch.autograd.grad(loss(logits), logits)[0]
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(torch.autograd.grad(compiled(logits), logits)[0], eager)


@needs_kernels
@pytest.mark.parametrize(
    ("logits_shape", "targets", "options", "error"),
    [
        ((4, 10), [1, 2, 3], {}, ValueError),
        ((4, 10), [1, 2, 3, 4], {"reduction": "avg"}, ValueError),
        ((4, 10), [1, 2, 3, 4], {"label_smoothing": 1.5}, ValueError),
        ((4, 10), [1, 2, 3, 4], {"vocab_size": 11}, ValueError),
        ((40,), [1], {}, ValueError),
        ((4, 10), [1.0, 2.0, 3.0, 4.0], {}, TypeError),
    ],
)
def test_cross_entropy_bad_arguments_raise(logits_shape, targets, options, error):
    logits = randn(*logits_shape, seed=0, dtype=torch.float32)
    with pytest.raises(error):
        cross_entropy(logits, torch.tensor(targets, device=KERNEL_DEVICE), **options)


# --- linear_cross_entropy -----------------------------------------------------------------------


@needs_kernels
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_linear_matches_torch_for_every_reduction(reduction, label_smoothing):
    hidden = randn(37, 16, seed=20, dtype=torch.float32)
    weight = randn(300, 16, seed=21, dtype=torch.float32)
    targets = _targets(37, 300, seed=22)
    _check_linear(
        hidden, weight, targets, reduction=reduction, label_smoothing=label_smoothing, chunk_size=10
    )


@needs_kernels
@pytest.mark.parametrize("chunk_size", [1, 8, 37, 100, None])
def test_linear_chunk_boundaries(chunk_size):
    hidden = randn(37, 24, seed=23, dtype=torch.float32)
    weight = randn(130, 24, seed=24, dtype=torch.float32)
    targets = _targets(37, 130, seed=25)
    _check_linear(hidden, weight, targets, chunk_size=chunk_size)


@needs_kernels
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_padded_vocabulary_rows_get_no_gradient(reduction):
    hidden = randn(29, 16, seed=26, dtype=torch.float32)
    weight = randn(640, 16, seed=27, dtype=torch.float32)
    targets = _targets(29, 601, seed=28)
    _check_linear(
        hidden,
        weight,
        targets,
        vocab_size=601,
        reduction=reduction,
        label_smoothing=0.1,
        chunk_size=7,
    )


@needs_kernels
@pytest.mark.parametrize("trainable", ["hidden", "weight"])
def test_linear_gradient_for_one_input_only(trainable):
    hidden = randn(20, 16, seed=29, dtype=torch.float32)
    weight = randn(90, 16, seed=30, dtype=torch.float32)
    targets = _targets(20, 90, seed=31)
    inputs = {"hidden": hidden, "weight": weight}
    inputs[trainable].requires_grad_()
    loss = linear_cross_entropy(hidden, weight, targets, chunk_size=6)
    (grad,) = torch.autograd.grad(loss, inputs[trainable])
    exact = {name: t.double().requires_grad_() for name, t in inputs.items()}
    exact_loss = F.cross_entropy(exact["hidden"] @ exact["weight"].T, targets)
    (exact_grad,) = torch.autograd.grad(exact_loss, exact[trainable])
    torch.testing.assert_close(grad.double(), exact_grad, rtol=1e-5, atol=1e-6)


@needs_kernels
def test_linear_no_grad_gives_the_same_loss():
    hidden = randn(20, 16, seed=32, dtype=torch.float32).requires_grad_()
    weight = randn(90, 16, seed=33, dtype=torch.float32)
    targets = _targets(20, 90, seed=34)
    with torch.no_grad():
        inference = linear_cross_entropy(hidden, weight, targets, chunk_size=6)
    trained = linear_cross_entropy(hidden, weight, targets, chunk_size=6)
    assert torch.equal(inference, trained.detach())


@needs_kernels
@pytest.mark.parametrize("scale", ["scalar", "per row"])
@pytest.mark.parametrize("wants", [(True, True), (True, False), (False, False)])
def test_linear_custom_op_passes_opcheck(scale, wants):
    # the one op behind the forward (a 0-d scale) and the backward's recompute (one scale per row)
    hidden = randn(13, 8, seed=38, dtype=torch.float32)
    weight = randn(30, 8, seed=39, dtype=torch.float32)
    scales = randn(*((13,) if scale == "per row" else ()), seed=41, dtype=torch.float32)
    options = (-100, 0.1, 30, 5, torch.float32)
    args = (hidden, weight, _targets(13, 30, seed=40), scales, *options, *wants)
    torch.library.opcheck(torch.ops.smallgpt.linear_cross_entropy.default, args)


@needs_kernels
def test_linear_compiles_into_one_graph():
    hidden = randn(21, 16, seed=35, dtype=torch.float32).requires_grad_()
    weight = randn(70, 16, seed=36, dtype=torch.float32).requires_grad_()
    targets = _targets(21, 64, seed=37)

    def loss(hidden, weight):
        return linear_cross_entropy(hidden, weight, targets, vocab_size=64, chunk_size=8)

    eager = torch.autograd.grad(loss(hidden, weight), (hidden, weight))
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    for a, b in zip(torch.autograd.grad(compiled(hidden, weight), (hidden, weight)), eager):
        torch.testing.assert_close(a, b)


@needs_kernels
@pytest.mark.parametrize(
    ("weight_shape", "weight_dtype", "options", "error"),
    [
        ((50, 8), torch.float32, {}, ValueError),
        ((50, 16), torch.float16, {}, TypeError),
        ((50, 16), torch.float32, {"chunk_size": 0}, ValueError),
        ((50, 16), torch.float32, {"vocab_size": 51}, ValueError),
        ((50, 16), torch.float32, {"reduction": "max"}, ValueError),
    ],
)
def test_linear_bad_arguments_raise(weight_shape, weight_dtype, options, error):
    hidden = randn(6, 16, seed=0, dtype=torch.float32)
    weight = randn(*weight_shape, seed=1, dtype=weight_dtype)
    with pytest.raises(error):
        linear_cross_entropy(hidden, weight, _targets(6, 50, seed=2), **options)


# --- GPU: bf16 at the 25M model's shapes (8 x 1024 tokens, 512 features, vocab 10000) ---------


@gpu
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bf16_cross_entropy_at_model_shapes(reduction):
    logits = randn(8192, 10048, seed=40, dtype=torch.bfloat16, device="cuda") * 4
    targets = _targets(8192, 10000, seed=41, device="cuda")
    _check_cross_entropy(
        logits, targets, vocab_size=10000, reduction=reduction, label_smoothing=0.1
    )


@gpu
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bf16_linear_cross_entropy_at_model_shapes(reduction):
    hidden = randn(8192, 512, seed=42, dtype=torch.bfloat16, device="cuda")
    weight = randn(10048, 512, seed=43, dtype=torch.bfloat16, device="cuda") * 0.05
    targets = _targets(8192, 10000, seed=44, device="cuda")
    _check_linear(hidden, weight, targets, vocab_size=10000, reduction=reduction)


@gpu
def test_linear_cross_entropy_under_autocast_matches_autocast_torch():
    hidden = randn(4096, 512, seed=45, dtype=torch.float32, device="cuda").requires_grad_()
    weight = randn(10048, 512, seed=46, dtype=torch.float32, device="cuda") * 0.05
    weight.requires_grad_()
    targets = _targets(4096, 10000, seed=47, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = linear_cross_entropy(hidden, weight, targets, vocab_size=10000)
        theirs = F.cross_entropy(F.linear(hidden, weight)[:, :10000], targets)
    grads = torch.autograd.grad(loss, (hidden, weight))
    their_grads = torch.autograd.grad(theirs, (hidden, weight))
    exact_inputs = [t.detach().double().requires_grad_() for t in (hidden, weight)]
    exact = F.cross_entropy((exact_inputs[0] @ exact_inputs[1].T)[:, :10000], targets)
    exact_grads = torch.autograd.grad(exact, exact_inputs)
    loss_scale, grad_scale = _linear_scales(hidden, weight, targets, torch.ones(()), {})
    assert_within_torch_error("loss", loss, theirs, exact, torch.bfloat16, scale=loss_scale)
    for name, a, b, c in zip(("grad_hidden", "grad_weight"), grads, their_grads, exact_grads):
        assert a.dtype == torch.float32
        assert_within_torch_error(name, a, b, c, torch.bfloat16, scale=grad_scale[name])


@gpu
def test_linear_cross_entropy_compiles_with_inductor_on_cuda():
    hidden = randn(2048, 512, seed=48, dtype=torch.bfloat16, device="cuda").requires_grad_()
    weight = randn(10048, 512, seed=49, dtype=torch.bfloat16, device="cuda") * 0.05
    weight.requires_grad_()
    targets = _targets(2048, 10000, seed=50, device="cuda")

    def loss(hidden, weight):
        return linear_cross_entropy(hidden, weight, targets, vocab_size=10000)

    eager = torch.autograd.grad(loss(hidden, weight), (hidden, weight))
    compiled = torch.compile(loss, fullgraph=True)
    for a, b in zip(torch.autograd.grad(compiled(hidden, weight), (hidden, weight)), eager):
        torch.testing.assert_close(a, b)
