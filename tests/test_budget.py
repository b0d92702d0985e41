"""train.fit_steps_to_budget: the run's length planned from its own timings fills the budget."""

from __future__ import annotations

import pytest
from smallgpt.config.loader import load_config
from smallgpt.train.budget import RunLength
from smallgpt.train.build import run_length

from tests.train_helpers import make_shards, run_tiny, single_thread


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(
    budget_s: float,
    step_s,
    *,
    validation_s: float = 0.0,
    eval_interval: int = 10**9,
    checkpoint_s: float = 0.0,
    checkpoint_interval: int | None = None,
    max_steps: int = 10**6,
) -> tuple[int, float, bool]:
    """Run a loop shaped like the trainer's on a fake clock: (steps taken, seconds used
    including the final validation and checkpoint, whether the budget stop cut it short)."""
    clock = FakeClock()
    length = RunLength(
        max_steps,
        budget_s=budget_s,
        eval_interval=eval_interval,
        checkpoint_interval=checkpoint_interval,
        eval_batches=4,
        clock=clock,
    )
    step, cut = 0, False
    while step < length.steps:
        if clock.now >= budget_s:
            cut = True
            break
        with length.timing("step"):
            clock.now += step_s(step)
        step += 1
        if step % eval_interval == 0 and step < length.steps:
            with length.timing("validation"):
                clock.now += validation_s
        if checkpoint_interval and step % checkpoint_interval == 0:
            with length.timing("checkpoint"):
                clock.now += checkpoint_s
        if length.due(step, 0):
            length.plan(step, clock.now)
    clock.now += validation_s + checkpoint_s  # the final validation and checkpoint
    return step, clock.now, cut


@pytest.mark.parametrize(
    "step_s, validation_s, checkpoint_s",
    [
        (lambda step: 0.37, 0.0, 0.0),
        (lambda step: 0.37, 9.0, 0.4),
        (lambda step: 2.0 if step < 2 else 0.2, 3.0, 1.0),  # slow first steps are not planned from
        (lambda step: 0.2 + 0.1 * (step % 3 == 0), 3.0, 0.0),  # noisy steps
    ],
)
def test_planned_length_uses_the_whole_budget_without_overrunning(
    step_s, validation_s, checkpoint_s
):
    budget = 300.0
    steps, used, cut = simulate(
        budget,
        step_s,
        validation_s=validation_s,
        eval_interval=250,
        checkpoint_s=checkpoint_s,
        checkpoint_interval=250,
    )
    assert not cut  # the plan ended the run, not the budget's hard stop
    assert 0.97 * budget <= used <= budget + 1.0, (steps, used)


def test_a_machine_that_slows_down_mid_run_is_followed():
    # steps take 3x longer after step 300: the plan shrinks so the run still ends in time
    steps, used, cut = simulate(300.0, lambda step: 0.2 if step < 300 else 0.6)
    assert not cut and 0.97 * 300 <= used <= 301.0
    assert 300 < steps < 300 + (300 - 60) / 0.6 + 2


def test_the_plan_never_passes_max_steps_and_unplanned_lengths_stay_fixed():
    steps, used, _ = simulate(300.0, lambda step: 0.01, max_steps=500)
    assert steps == 500 and used < 10
    fixed = RunLength(1000)
    assert not fixed.planned and not fixed.due(25, 0) and not fixed.plan(25, 1.0)
    assert fixed.steps == 1000


def test_without_a_time_budget_the_length_is_max_steps():
    config = load_config("demo-cpu", ["train.max_time_minutes=null", "train.max_steps=123"])
    length = run_length(config)
    assert not length.planned and length.steps == 123
    assert run_length(load_config("demo-cpu")).planned


def test_trainer_ends_a_budgeted_run_on_its_plan_with_the_decay_finished(tmp_path):
    budget_s = 6.0
    with single_thread():
        summary, recorder = run_tiny(
            make_shards(tmp_path),
            tmp_path / "run",
            "train.max_steps=100000",
            f"train.max_time_minutes={budget_s / 60}",
            "train.fit_steps_to_budget=true",
            "train.eval_interval=100",
            "optim.min_lr_ratio=0.1",
            "checkpoint.interval=null",
            "log.num_samples=0",
        )
    lrs = [r.lr for r in recorder.steps]
    peak = 3e-3
    assert 20 < summary.steps < 100000 and max(lrs) == pytest.approx(peak)
    if summary.stop_reason.startswith("reached the"):
        # the cosine ran over the planned length: the last step is at its floor
        assert (
            summary.stop_reason == f"reached the {summary.steps} steps planned for the time budget"
        )
        assert lrs[-1] == pytest.approx(0.1 * peak, rel=0.02)
    else:  # the machine slowed down a lot late in the run: the hard stop still holds
        assert summary.stop_reason.startswith("time budget")
    assert summary.wall_time_s < budget_s + 2.0
