"""Edge cases of the guide's functions that the verbatim run does not reach."""

from __future__ import annotations

import math

import pytest
import smallgpt
import torch
import torch.nn.functional as F


def lrs(warmup: int, total: int, steps: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = smallgpt.get_cosine_schedule_with_warmup(
        opt, num_warmup_steps=warmup, num_training_steps=total
    )
    values = [scheduler.get_last_lr()[0]]
    for _ in range(steps):
        opt.step()
        scheduler.step()
        values.append(scheduler.get_last_lr()[0])
    return values


@pytest.mark.parametrize(("warmup", "total"), [(50, 60), (3, 20), (0, 10), (10, 10)])
def test_schedule_is_the_guides_formula_and_zero_after_training(warmup, total):
    for t, lr in enumerate(lrs(warmup, total, total + 5)):
        if t >= total:
            expected = 0.0
        else:
            ramp = t / warmup if warmup else math.inf
            span = total - warmup
            cosine = 0.5 * (1 + math.cos(math.pi * (t - warmup) / span)) if span else 1.0
            expected = 2.0 * min(ramp, cosine)  # lr_max × min(t/warmup, cosine)
        assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15), t


def test_schedule_min_takes_the_cosine_late_in_a_long_warmup():
    # t=45 of warmup 50, total 60: t/warmup = 0.9 but the cosine term is 0.5
    assert lrs(50, 60, 45)[45] == pytest.approx(2.0 * 0.5, rel=1e-12)


def test_schedule_longer_warmup_than_training_warms_up_over_the_run():
    # like Hugging Face's get_cosine_schedule_with_warmup: t / warmup, never an error
    assert lrs(60, 20, 25)[:21] == pytest.approx([2.0 * t / 60 for t in range(20)] + [0.0])


def test_schedule_rejects_counts_it_cannot_follow():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="num_training_steps >= 1"):
        smallgpt.get_cosine_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=0)
    with pytest.raises(TypeError, match="num_warmup_steps must be an int"):
        smallgpt.get_cosine_schedule_with_warmup(opt, num_warmup_steps=2.5, num_training_steps=9)


def test_compute_loss_skips_ignored_and_pad_labels_and_checks_shapes():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=generator)
    labels = torch.randint(0, 10, (2, 5), generator=generator)
    labels[0, 3:] = -100
    labels[1, 4] = 10  # a pad id
    keep = labels.flatten() >= 0
    expected = F.cross_entropy(logits.reshape(-1, 11)[keep], labels.flatten()[keep])
    torch.testing.assert_close(smallgpt.compute_loss(logits, labels), expected)
    keep &= labels.flatten() != 10
    expected = F.cross_entropy(logits.reshape(-1, 11)[keep], labels.flatten()[keep])
    torch.testing.assert_close(smallgpt.compute_loss(logits, labels, pad_token_id=10), expected)
    with pytest.raises(ValueError, match="pass the pair forward_pass returns"):
        smallgpt.compute_loss(logits, labels[:, 1:])


def test_log_training_metrics_without_wandb_or_writer_returns_the_record(capsys):
    record = smallgpt.log_training_metrics(3, 800.0, 1e-4, 2.0)
    assert record == {
        "train/loss": 800.0,
        "train/perplexity": math.inf,  # exp(800) overflows a float
        "train/learning_rate": 1e-4,
        "train/step": 3,
        "train/elapsed_time": 2.0,
    }
    assert "step 3 | loss 800.0000" in capsys.readouterr().out
