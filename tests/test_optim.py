"""The optimizers: `optim.name=muon` updates exactly as torch's own Muon and AdamW would (or, on
devices without native bf16, as a plain fp32 Muon written here from an SVD would), one LR
schedule drives both, and its state survives a checkpoint round trip."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from smallgpt.model.gpt import SmallGPT
from smallgpt.optim.optimizers import (
    Fp32Muon,
    MuonWithAdamW,
    build_optimizer,
    has_native_bf16,
    is_muon_matrix,
    orthogonalize,
)
from smallgpt.optim.schedule import get_cosine_schedule_with_warmup
from torch import nn

HYPER = {"lr": 3e-3, "betas": (0.9, 0.95), "weight_decay": 0.1, "eps": 1e-8}


def tiny_model(seed: int = 0) -> SmallGPT:
    torch.manual_seed(seed)
    return SmallGPT(97, 32, 4, 2, max_seq_len=16, dropout=0.0)


def train_steps(model: SmallGPT, optimizer: torch.optim.Optimizer, steps: int, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        tokens = torch.randint(97, (4, 16), generator=generator)
        _, loss = model(tokens, tokens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = tiny_model()
    optimizer = build_optimizer(model, "muon", **HYPER)
    assert isinstance(optimizer, MuonWithAdamW)
    muon = {id(p) for p in optimizer.param_groups[0]["params"]}
    for name, param in model.named_parameters():
        assert (id(param) in muon) == (param.dim() == 2 and name.startswith("transformer.h."))
    assert id(model.transformer.wte.weight) not in muon  # also the tied output layer
    everything = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(everything) == len(set(map(id, everything))) == len(list(model.parameters()))
    assert not is_muon_matrix("transformer.wpe.weight", model.transformer.wpe.weight)


def muon_with_adamw(model: SmallGPT, fp32_newton_schulz: bool) -> MuonWithAdamW:
    """build_optimizer's Muon split with the Newton–Schulz precision chosen by the test."""
    named = dict(model.named_parameters())
    rest = [p for n, p in named.items() if not is_muon_matrix(n, p)]
    return MuonWithAdamW(
        [p for n, p in named.items() if is_muon_matrix(n, p)],
        [
            {"params": [p for p in rest if p.dim() >= 2], "weight_decay": HYPER["weight_decay"]},
            {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
        ],
        fp32_newton_schulz=fp32_newton_schulz,
        **HYPER,
    )


def test_build_optimizer_runs_newton_schulz_in_fp32_only_without_native_bf16():
    muon = build_optimizer(tiny_model(), "muon", **HYPER, device_type="cpu")._muon
    assert isinstance(muon, Fp32Muon) != has_native_bf16("cpu")
    assert isinstance(muon, torch.optim.Muon)


def test_muon_steps_like_torch_muon_and_adamw_side_by_side():
    ours, reference = tiny_model(), tiny_model()
    optimizer = muon_with_adamw(ours, fp32_newton_schulz=False)
    named = dict(reference.named_parameters())
    matrices = [p for n, p in named.items() if is_muon_matrix(n, p)]
    rest = [p for p in named.values() if not any(p is m for m in matrices)]
    torch_muon = torch.optim.Muon(
        matrices,
        lr=HYPER["lr"],
        weight_decay=HYPER["weight_decay"],
        momentum=0.95,
        nesterov=True,
        adjust_lr_fn="match_rms_adamw",
    )
    torch_adamw = torch.optim.AdamW(
        [
            {"params": [p for p in rest if p.dim() >= 2], "weight_decay": HYPER["weight_decay"]},
            {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=HYPER["lr"],
        betas=HYPER["betas"],
        eps=HYPER["eps"],
    )

    class Both:
        def step(self):
            torch_muon.step()
            torch_adamw.step()

        def zero_grad(self, set_to_none=True):
            reference.zero_grad(set_to_none=set_to_none)

    train_steps(ours, optimizer, 5)
    train_steps(reference, Both(), 5)
    for (name, a), b in zip(ours.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_the_schedule_sets_the_learning_rate_of_both_parts():
    model = tiny_model()
    optimizer = build_optimizer(model, "muon", **HYPER)
    schedule = get_cosine_schedule_with_warmup(optimizer, 2, 10, 0.1)
    train_steps(model, optimizer, 3)
    for _ in range(3):
        schedule.step()
    rates = {group["lr"] for group in optimizer.param_groups}
    assert len(rates) == 1 and 0 < rates.pop() < HYPER["lr"]
    assert optimizer._muon.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("fp32_newton_schulz", [False, True])
def test_muon_state_dict_round_trip_resumes_exactly(fp32_newton_schulz):
    model = tiny_model()
    optimizer = muon_with_adamw(model, fp32_newton_schulz)
    train_steps(model, optimizer, 3)
    saved_model = copy.deepcopy(model.state_dict())
    saved_state = copy.deepcopy(optimizer.state_dict())  # state_dict() shares live tensors
    train_steps(model, optimizer, 3, seed=2)

    resumed = tiny_model(seed=5)
    resumed.load_state_dict(saved_model)
    resumed_optimizer = muon_with_adamw(resumed, fp32_newton_schulz)
    resumed_optimizer.load_state_dict(saved_state)
    train_steps(resumed, resumed_optimizer, 3, seed=2)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_unknown_optimizer_name_is_refused():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_optimizer(tiny_model(), "sgd")


NS = ((3.4445, -4.7750, 2.0315), 5, 1e-7)  # torch.optim.Muon's coefficients, steps and eps


def newton_schulz_by_svd(matrix: torch.Tensor) -> torch.Tensor:
    """The Newton–Schulz result from the SVD M = U S V^T in float64: the iteration acts on each
    singular value s / ||M||_F alone as the scalar map s <- a s + b s^3 + c s^5."""
    (a, b, c), steps, _ = NS
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    s = s / matrix.double().norm()
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return u @ torch.diag(s) @ vh


@pytest.mark.parametrize("shape", [(24, 24), (16, 40), (40, 16)])
def test_orthogonalize_matches_the_iteration_on_the_singular_values(shape):
    matrix = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    result = orthogonalize(matrix, *NS)
    assert result.dtype == torch.float32 and result.shape == matrix.shape
    # entries are O(1 / sqrt(min dim)); fp32 products of that size
    torch.testing.assert_close(result.double(), newton_schulz_by_svd(matrix), rtol=0, atol=1e-4)


def test_fp32_muon_updates_like_a_plain_muon_step_by_step():
    generator = torch.Generator().manual_seed(4)
    start = torch.randn(12, 20, generator=generator)
    param = nn.Parameter(start.clone())
    lr, decay, momentum = 0.02, 0.1, 0.95
    optimizer = Fp32Muon(
        [param], lr=lr, weight_decay=decay, momentum=momentum, adjust_lr_fn="match_rms_adamw"
    )
    expected, buffer = start.double(), torch.zeros_like(start, dtype=torch.float64)
    for _ in range(4):
        grad = torch.randn(start.shape, generator=generator)
        param.grad = grad.clone()
        optimizer.step()
        buffer = momentum * buffer + (1 - momentum) * grad.double()
        nesterov = (1 - momentum) * grad.double() + momentum * buffer
        expected = expected * (1 - lr * decay) - lr * 0.2 * math.sqrt(20) * newton_schulz_by_svd(
            nesterov
        )
    torch.testing.assert_close(param.detach().double(), expected, rtol=0, atol=1e-5)


def test_fp32_muon_refuses_other_lr_adjustments():
    with pytest.raises(ValueError, match="match_rms_adamw"):
        Fp32Muon([nn.Parameter(torch.zeros(2, 2))], adjust_lr_fn="original")
