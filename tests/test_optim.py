"""The optimizers: `optim.name=muon` updates exactly as torch's own Muon and AdamW would, one
LR schedule drives both, and its state survives a checkpoint round trip."""

from __future__ import annotations

import copy

import pytest
import torch
from smallgpt.model.gpt import SmallGPT
from smallgpt.optim.optimizers import MuonWithAdamW, build_optimizer, is_muon_matrix
from smallgpt.optim.schedule import get_cosine_schedule_with_warmup

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


def test_muon_steps_like_torch_muon_and_adamw_side_by_side():
    ours, reference = tiny_model(), tiny_model()
    optimizer = build_optimizer(ours, "muon", **HYPER)
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


def test_muon_state_dict_round_trip_resumes_exactly():
    model = tiny_model()
    optimizer = build_optimizer(model, "muon", **HYPER)
    train_steps(model, optimizer, 3)
    saved_model = copy.deepcopy(model.state_dict())
    saved_state = copy.deepcopy(optimizer.state_dict())  # state_dict() shares live tensors
    train_steps(model, optimizer, 3, seed=2)

    resumed = tiny_model(seed=5)
    resumed.load_state_dict(saved_model)
    resumed_optimizer = build_optimizer(resumed, "muon", **HYPER)
    resumed_optimizer.load_state_dict(saved_state)
    train_steps(resumed, resumed_optimizer, 3, seed=2)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_unknown_optimizer_name_is_refused():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_optimizer(tiny_model(), "sgd")
