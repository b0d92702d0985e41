"""Learning-rate schedule: linear warmup then cosine to a floor, checked against Hugging Face."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from smallgpt.optim.schedule import get_cosine_schedule_with_warmup


def optimizer(lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def lrs(scheduler, opt, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out


@pytest.mark.parametrize(("warmup", "total", "floor"), [(10, 100, 0.1), (0, 50, 0.0), (7, 7, 0.3)])
def test_schedule_matches_hugging_face_cosine_with_min_lr(warmup, total, floor):
    hf = pytest.importorskip("transformers.optimization")
    ours_opt, hf_opt = optimizer(), optimizer()
    ours = lrs(
        get_cosine_schedule_with_warmup(ours_opt, warmup, total, min_lr_ratio=floor),
        ours_opt,
        total + 1,
    )
    reference = hf.get_cosine_with_min_lr_schedule_with_warmup(
        hf_opt, warmup, total, min_lr_rate=floor
    )
    expected = lrs(reference, hf_opt, total + 1)
    assert ours == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_schedule_shape_warmup_peak_midpoint_floor():
    opt = optimizer(lr=2.0)
    values = lrs(get_cosine_schedule_with_warmup(opt, 4, 104, min_lr_ratio=0.1), opt, 200)
    assert values[:5] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert values[54] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # half-way through the decay
    assert values[104] == pytest.approx(0.2)
    # after the end the rate stays at the floor (a plain cosine would climb back up)
    assert all(v == pytest.approx(0.2) for v in values[104:])
    assert all(a >= b for a, b in itertools.pairwise(values[4:105]))


def test_every_param_group_follows_its_own_base_lr():
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    opt = torch.optim.AdamW(
        [{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 0.1}]
    )
    scheduler = get_cosine_schedule_with_warmup(opt, 0, 10, min_lr_ratio=0.0)
    for _ in range(5):
        opt.step()
        scheduler.step()
    factor = 0.5 * (1 + math.cos(math.pi * 5 / 10))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([factor, 0.1 * factor])


def test_bad_schedule_arguments_raise_value_error():
    with pytest.raises(ValueError, match="min_lr_ratio"):
        get_cosine_schedule_with_warmup(optimizer(), 1, 10, min_lr_ratio=1.5)
    with pytest.raises(ValueError, match="num_warmup_steps must be >= 0"):
        get_cosine_schedule_with_warmup(optimizer(), -1, 10)


def test_warmup_longer_than_training_never_finishes_warming_up_like_hugging_face():
    hf = pytest.importorskip("transformers.optimization")
    ours_opt, hf_opt = optimizer(), optimizer()
    ours = lrs(get_cosine_schedule_with_warmup(ours_opt, 20, 10, min_lr_ratio=0.0), ours_opt, 10)
    theirs = lrs(hf.get_cosine_schedule_with_warmup(hf_opt, 20, 10), hf_opt, 10)
    assert ours == pytest.approx(theirs, abs=1e-12)
