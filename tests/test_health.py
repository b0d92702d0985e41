"""Training health checks: the detectors on synthetic curves, and real runs that diverge (tiny
ones and the demo preset at optim.lr=10), overfit (with early stopping) or stay healthy (the demo
preset)."""

from __future__ import annotations

import json
import math
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from smallgpt.checkpoint.load import load_model, load_tokenizer
from smallgpt.config.loader import load_config
from smallgpt.config.schema import ConfigError, DataSection, HealthSection
from smallgpt.train.callbacks import TrainerCallback, TrainingHealthWarning
from smallgpt.train.health import (
    DIVERGENCE,
    EXPLODING_GRADIENTS,
    OVERFITTING,
    DivergenceDetector,
    GradientSpikeDetector,
    OverfitDetector,
    PlateauDetector,
)
from smallgpt.train.logger import read_metrics
from smallgpt.train.runtime import cpu_has_native_bf16
from smallgpt.train.trainer import Trainer
from train_helpers import SHAKESPEARE, make_shards, run_tiny, single_thread

DEFAULTS = HealthSection()


def spike_detector() -> GradientSpikeDetector:
    return GradientSpikeDetector(DEFAULTS.grad_spike_factor, DEFAULTS.window, DEFAULTS.warmup_steps)


def plateau_detector() -> PlateauDetector:
    return PlateauDetector(
        DEFAULTS.plateau_window, DEFAULTS.min_delta, DEFAULTS.ema_beta, DEFAULTS.warmup_steps
    )


def overfit_detector() -> OverfitDetector:
    return OverfitDetector(DEFAULTS.overfit_patience, DEFAULTS.max_val_gap)


def divergence_detector(vocab_size: int) -> DivergenceDetector:
    return DivergenceDetector(
        vocab_size, DEFAULTS.divergence_loss_factor, DEFAULTS.divergence_grad_factor
    )


def healthy_curve(steps: int, seed: int = 0) -> tuple[list[float], list[float]]:
    """A decreasing loss (exponential decay plus noise) and noisy grad norms around 1."""
    rng = random.Random(seed)
    losses = [1.5 + 4.0 * math.exp(-s / 300) + rng.gauss(0, 0.05) for s in range(steps)]
    norms = [math.exp(rng.gauss(0, 0.3)) for _ in range(steps)]
    return losses, norms


# ----------------------------------------------------------------------------- detectors


def test_gradient_spike_fires_at_the_jump_above_the_running_median_only():
    detector = spike_detector()
    rng = random.Random(1)
    norms = [1.0 + rng.uniform(-0.2, 0.2) for _ in range(40)]
    spike_at = 40
    messages = [detector.update(step, 3.0, norm) for step, norm in enumerate(norms, 1)]
    assert messages == [None] * 40
    median = float(np.median(norms[-DEFAULTS.window :]))
    message = detector.update(spike_at + 1, 3.0, 20 * median)
    assert message is not None
    assert "optim.lr" in message and "optim.grad_clip" in message
    assert f"median {median:.3g}" in message


def test_gradient_rise_below_the_factor_fires_nothing():
    detector = spike_detector()
    for step in range(1, 41):
        assert detector.update(step, 3.0, 1.0) is None
    assert detector.update(41, 3.0, 0.9 * DEFAULTS.grad_spike_factor) is None


def test_non_finite_loss_or_gradient_fires_even_during_warmup():
    assert spike_detector().update(1, float("nan"), 1.0) is not None
    message = spike_detector().update(1, 3.0, float("inf"))
    assert message is not None and "optim.lr" in message


def first_firing(detector: DivergenceDetector, trace: list[tuple[float, float]]) -> int | None:
    """The step (from 1) at which the detector first answers a message, or None."""
    for step, (loss, norm) in enumerate(trace, 1):
        if detector.update(step, loss, norm) is not None:
            return step
    return None


def test_divergence_fires_on_a_loss_far_above_the_uniform_prediction_loss_from_the_start():
    # The demo preset at optim.lr=10: (loss, grad norm) of its first steps.
    trace = [(8.356, 5.92), (8.360, 5.73), (344.3, 47.4), (3000.5, 133.2)]
    detector = divergence_detector(4096)
    assert first_firing(detector, trace) == 3
    message = detector.update(4, *trace[3])
    assert f"ln(vocab_size)={np.log(4096):.2f}" in message
    for advice in ("optim.lr", "optim.warmup_steps", "optim.grad_clip"):
        assert advice in message
    # The windowed spike check sees nothing there: it waits for its warm-up and full window.
    spikes = spike_detector()
    assert [spikes.update(step, *entry) for step, entry in enumerate(trace, 1)] == [None] * 4


def test_divergence_compares_a_resumed_run_with_its_own_first_loss():
    first = 3.0  # a resumed run, far below ln(4096)
    factor = DEFAULTS.divergence_loss_factor
    below = [(first, 1.0)] + [(first * factor * 0.95, 1.0)] * 5
    assert first_firing(divergence_detector(4096), below) is None
    above = [(first, 1.0), (3.1, 1.0), (first * factor * 1.05, 1.0)]
    detector = divergence_detector(4096)
    assert first_firing(detector, above) == 3
    assert "first step's loss 3" in detector.update(4, first * factor * 1.05, 1.0)


def test_divergence_fires_on_gradient_norms_orders_of_magnitude_above_the_first():
    factor = DEFAULTS.divergence_grad_factor
    # The norm grows 3x a step while the loss stays put; a window of such norms never spikes.
    trace = [(5.0, 2.0 * 3.0**k) for k in range(12)]
    expected = 1 + next(k for k in range(12) if 3.0**k > factor)
    detector = divergence_detector(300)
    assert first_firing(detector, trace) == expected
    assert f"divergence_grad_factor={factor:g}" in detector.update(99, 5.0, 2.0 * 3.0**12)


def test_divergence_ignores_non_finite_steps_and_zero_references():
    detector = divergence_detector(300)
    # Non-finite steps are skipped by the trainer (and flagged by the spike check).
    assert detector.update(1, float("nan"), float("inf")) is None
    assert detector.update(2, 0.0, 0.0) is None  # no reference a later value is "far above"
    assert detector.update(3, 5.0, 1.0) is None
    assert detector.update(4, 5.5, 1.5) is None
    assert detector.update(5, 5.5, 1.0 * DEFAULTS.divergence_grad_factor * 1.1) is not None


def test_divergence_is_silent_on_a_healthy_trace_with_an_early_spike():
    losses, norms = healthy_curve(2000)
    # The demo preset's own run had a 15x gradient spike (and a loss bump) at step 12.
    norms[11] *= 15.0
    losses[11] += 1.5
    detector = divergence_detector(300)
    assert first_firing(detector, list(zip(losses, norms, strict=True))) is None


def test_plateau_fires_after_the_window_of_a_flat_loss():
    detector = plateau_detector()
    losses = [5.0 - 0.01 * s for s in range(200)] + [3.0] * 1000
    fired = [step for step, loss in enumerate(losses) if detector.update(step, loss)]
    assert fired, "a flat loss for 1000 steps must be flagged"
    # The EMA settles within a few hundred steps of step 200; the window starts from there.
    assert 200 + DEFAULTS.plateau_window <= fired[0] <= 200 + DEFAULTS.plateau_window + 300
    assert "optim.lr" in detector.update(len(losses), 3.0)
    assert "optim.warmup_steps" in detector.update(len(losses) + 1, 3.0)


def test_overfit_fires_when_validation_rises_while_training_falls():
    detector = overfit_detector()
    val = [3.0, 2.5, 2.6, 2.7, 2.8]
    train = [3.1, 2.4, 2.3, 2.2, 2.1]
    fired = [i for i, (v, t) in enumerate(zip(val, train, strict=True)) if detector.update(i, v, t)]
    assert fired == [1 + DEFAULTS.overfit_patience]
    message = detector.update(5, 2.9, 2.0)
    assert "model.dropout" in message and "optim.weight_decay" in message


def test_validation_rising_with_training_loss_is_not_overfitting():
    detector = overfit_detector()
    for i, loss in enumerate([3.0, 3.1, 3.2, 3.3, 3.4, 3.5]):
        assert detector.update(i, loss + 0.1, loss) is None


def test_overfit_fires_on_a_large_validation_gap():
    message = overfit_detector().update(10, 2.0 + DEFAULTS.max_val_gap + 0.5, 2.0)
    assert message is not None and "nats above the training loss" in message


def test_healthy_decreasing_curve_fires_nothing():
    spikes, plateau, overfit = spike_detector(), plateau_detector(), overfit_detector()
    losses, norms = healthy_curve(2000)
    divergence = divergence_detector(300)
    for step, (loss, norm) in enumerate(zip(losses, norms, strict=True), 1):
        assert divergence.update(step, loss, norm) is None, step
        assert spikes.update(step, loss, norm) is None, step
        assert plateau.update(step, loss) is None, step
        if step % 100 == 0:
            train = float(np.mean(losses[step - 100 : step]))
            assert overfit.update(step, train + 0.1, train) is None, step


def test_health_thresholds_are_validated_by_the_config():
    with pytest.raises(ConfigError, match="train.health.grad_spike_factor"):
        load_config("demo-cpu", ["train.health.grad_spike_factor=1"])
    with pytest.raises(ConfigError, match="did you mean 'train.health.plateau_window'"):
        load_config("demo-cpu", ["train.health.plateau_windw=3"])
    for key in ("divergence_loss_factor", "divergence_grad_factor"):
        with pytest.raises(ConfigError, match=f"train.health.{key} must be > 1"):
            load_config("demo-cpu", [f"train.health.{key}=0.5"])


# ----------------------------------------------------------------------------- real runs


def warning_records(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == "warning"]


def test_lr_10_warns_once_of_divergence_naming_optim_lr(tmp_path):
    with single_thread():
        shards = make_shards(tmp_path)
        with pytest.warns(TrainingHealthWarning, match="divergence.*optim.lr") as caught:
            summary, recorder = run_tiny(
                shards,
                tmp_path / "run",
                "optim.lr=10",
                "train.max_steps=12",
                "train.eval_interval=100",
                "train.health.warmup_steps=3",
                "train.health.window=3",
                "train.max_nonfinite_steps=100",
                "log.tensorboard=true",
            )
    norms = [r.grad_norm for r in recorder.steps]
    assert max(norms) > DEFAULTS.grad_spike_factor * min(norms)  # the run really exploded
    records = warning_records(tmp_path / "run")
    # one warning: the spike check, which would also fire here, stays quiet after a divergence
    assert [r["kind"] for r in records] == [DIVERGENCE]
    assert len(caught) == 1
    assert "optim.lr" in records[0]["message"]
    assert records[0]["message"] in summary.warnings
    assert "optim.lr" in summary.format()
    assert tensorboard_texts(tmp_path / "run" / "tensorboard", "warnings/divergence") == [
        records[0]["message"]
    ]
    assert summary.stop_reason == "reached train.max_steps=12"  # warned, not stopped


def test_a_spike_after_warm_up_still_warns_of_exploding_gradients(tmp_path):
    with single_thread():
        shards = make_shards(tmp_path)
        with pytest.warns(TrainingHealthWarning, match="exploding gradients.*median"):
            run_tiny(
                shards,
                tmp_path / "run",
                "optim.lr=10",
                "train.max_steps=12",
                "train.eval_interval=100",
                "train.health.warmup_steps=3",
                "train.health.window=3",
                "train.health.divergence_loss_factor=1e30",
                "train.health.divergence_grad_factor=1e30",
                "train.max_nonfinite_steps=100",
            )
    assert [r["kind"] for r in warning_records(tmp_path / "run")] == [EXPLODING_GRADIENTS]


def test_early_stopping_also_stops_a_diverging_run_and_saves_nothing_after_it(tmp_path):
    with single_thread():
        shards = make_shards(tmp_path)
        with pytest.warns(TrainingHealthWarning, match="divergence"):
            summary, recorder = run_tiny(
                shards,
                tmp_path / "run",
                "optim.lr=10",
                "train.max_steps=12",
                "train.eval_interval=100",
                "train.early_stopping_patience=5",
                "train.max_nonfinite_steps=100",
            )
    (record,) = warning_records(tmp_path / "run")
    assert summary.stop_reason.startswith(f"divergence at step {record['step']}")
    assert summary.steps == record["step"] == recorder.steps[-1].step < 12
    # checkpoint.interval=4 (TINY): nothing was saved before the divergence, nor after it
    assert summary.checkpoint is None and summary.best_checkpoint is None
    assert not (tmp_path / "run" / "checkpoints").exists() or not any(
        (tmp_path / "run" / "checkpoints").iterdir()
    )
    assert recorder.val_losses == []  # the diverged weights are not validated


def tensorboard_texts(log_dir: Path, tag: str) -> list[str]:
    """The texts TensorBoard's own reader finds under `tag`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    return [
        value.decode()
        for event in events.Tensors(f"{tag}/text_summary")
        for value in event.tensor_proto.string_val
    ]


def test_tiny_training_set_overfits_and_early_stopping_keeps_the_best_checkpoint(tmp_path):
    text = tmp_path / "small.txt"
    text.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:2200], encoding="utf-8")
    from smallgpt.data.prepare import prepare_data

    data = DataSection(text_files=[str(text)], tokenizer_vocab_size=300, val_fraction=0.3)
    shards = prepare_data(data, tmp_path, show_progress=False).shard_dir
    with single_thread(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary, recorder = run_tiny(
            shards,
            tmp_path / "run",
            "model.embed_dim=64",
            "model.num_layers=2",
            "data.seq_len=16",
            "optim.lr=3e-3",
            "optim.weight_decay=0.0",
            "train.batch_size=16",
            "train.max_steps=600",
            "train.eval_interval=10",
            "train.health.warmup_steps=10",
            "train.early_stopping_patience=3",
            "checkpoint.interval=null",
        )
    kinds = [r["kind"] for r in warning_records(tmp_path / "run")]
    assert OVERFITTING in kinds
    assert any("model.dropout" in str(w.message) for w in caught)
    assert summary.stop_reason.startswith("early stopping")
    assert summary.steps < 600
    val = recorder.val_losses
    best = int(np.argmin(val))
    assert all(v >= val[best] for v in val[best + 1 : best + 4])  # patience 3 after the best
    state = json.loads((tmp_path / "run" / "checkpoints" / "best" / "state.json").read_text())
    assert state["trainer"]["step"] == 10 * (best + 1)
    assert math.isclose(summary.best_val_loss, val[best])


def test_cli_prints_the_warning_above_the_progress_bar_and_in_the_summary(tmp_path, capsys):
    from smallgpt.train.cli import main as train_main
    from train_helpers import TINY

    with single_thread():
        shards = make_shards(tmp_path)
        overrides = [
            *TINY,
            f"data.shard_dir={shards}",
            "log.progress_bar=true",
            "optim.lr=10",
            "train.max_steps=10",
            "train.eval_interval=100",
            "train.health.warmup_steps=3",
            "train.health.window=3",
            "train.max_nonfinite_steps=100",
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("error", TrainingHealthWarning)  # the bar path does not warn
            assert train_main(["demo-cpu", *overrides, "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    # once written above the bar (tqdm.write), once in the final summary
    assert out.count("warning: divergence") == 2
    assert out.index("warning: divergence") < out.index("training finished")
    assert "optim.lr" in out


# The command, as a new user tried it:
#   python -m smallgpt.train demo-cpu train.max_steps=30 optim.warmup_steps=5 optim.lr=10
DEMO_LR_10 = ["train.max_steps=30", "optim.warmup_steps=5", "optim.lr=10"]


def demo_test_overrides() -> list[str]:
    """What only makes a demo-preset run quicker to test (model, data and optimizer stay): fp32
    where the CPU has no native bf16 (as the demo itself does; emulated bf16 is ~10x slower),
    two validation batches, no samples, plot or TensorBoard, a train record every step."""
    overrides = [
        "train.eval_batches=2",
        "train.max_time_minutes=null",
        "log.interval=1",
        "log.num_samples=0",
        "log.plot=false",
        "log.tensorboard=false",
    ]
    if not cpu_has_native_bf16():
        overrides.append("train.precision=fp32")
    return overrides


class StopAfter(TrainerCallback):
    """Requests the stop once `steps` updates are done."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_step_end(self, trainer: Trainer, result) -> None:
        if trainer.step >= self.steps:
            trainer.request_stop(f"test: {self.steps} steps done")


def cross_entropy_on_text(checkpoint: Path, text: str, tokens: int = 128) -> float:
    """Mean next-token cross-entropy (nats) of a checkpoint's model on the start of `text`,
    computed here with torch's own cross-entropy."""
    ids = torch.tensor([load_tokenizer(checkpoint).encode(text)[: tokens + 1]])
    with torch.no_grad():
        logits = load_model(checkpoint)(ids[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten()).item()


@pytest.mark.slow
def test_demo_at_lr_10_warns_of_divergence_within_10_steps(tmp_path):
    config = load_config(
        "demo-cpu",
        [*DEMO_LR_10, *demo_test_overrides(), "log.progress_bar=false", "checkpoint.interval=null"],
    )
    run = tmp_path / "run"
    with (
        pytest.warns(TrainingHealthWarning) as caught,
        Trainer(config, run_dir=run, callbacks=[StopAfter(10)]) as trainer,
    ):
        trainer.fit()
    (record,) = warning_records(run)  # one warning: the run diverged, nothing else to say
    assert record["kind"] == DIVERGENCE and record["step"] <= 10
    for advice in ("optim.lr", "optim.warmup_steps", "optim.grad_clip"):
        assert advice in record["message"]
    assert [str(w.message) for w in caught] == [record["message"]]
    assert json.loads((run / "summary.json").read_text())["warnings"] == [record["message"]]
    # It really diverged: that step's training loss is far worse than a uniform prediction.
    losses = {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r}
    assert losses[record["step"]] > 2 * math.log(config.data.tokenizer_vocab_size)


@pytest.mark.slow
def test_demo_at_lr_10_stops_on_divergence_keeping_the_checkpoint_before_it(tmp_path, capsys):
    from smallgpt.train.cli import main as train_main

    run = tmp_path / "run"
    overrides = [
        *DEMO_LR_10,
        *demo_test_overrides(),
        "train.health.stop_on_divergence=true",
        "train.eval_interval=1",
        "checkpoint.interval=1",
        "log.progress_bar=true",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingHealthWarning)  # the bar path does not warn
        assert train_main(["demo-cpu", *overrides, "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.count("warning: divergence") == 2  # above the bar, and in the summary
    summary = json.loads((run / "summary.json").read_text())
    (record,) = warning_records(run)
    steps = summary["steps"]
    assert record["step"] == steps <= 10
    assert summary["stop_reason"].startswith(f"divergence at step {steps}")
    # The loss of step `steps` was measured on the weights after step steps - 1: those diverged;
    # the ones after steps - 2 are the last good ones. Nothing was written at `steps`.
    checkpoints = run / "checkpoints"
    kept, diverged = checkpoints / f"step_{steps - 2:08d}", checkpoints / f"step_{steps - 1:08d}"
    assert summary["checkpoint"] == str(kept)
    assert not (checkpoints / f"step_{steps:08d}").exists()
    best_step = json.loads((checkpoints / "best" / "state.json").read_text())["trainer"]["step"]
    assert best_step <= steps - 2
    uniform = math.log(load_config("demo-cpu").data.tokenizer_vocab_size)
    text = SHAKESPEARE.read_text(encoding="utf-8")[-4000:]
    assert cross_entropy_on_text(kept, text) < uniform + 0.5
    assert cross_entropy_on_text(checkpoints / "best", text) < uniform + 0.5
    assert cross_entropy_on_text(diverged, text) > uniform + 1.0


@pytest.mark.slow
def test_demo_config_short_run_fires_no_warning(tmp_path):
    config = load_config(
        "demo-cpu",
        [
            "train.max_steps=40",
            "optim.warmup_steps=10",  # the preset's peak learning rate within the run
            "train.eval_interval=20",
            *demo_test_overrides(),
            "log.progress_bar=false",
            "checkpoint.interval=null",
        ],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingHealthWarning)
        with Trainer(config, run_dir=tmp_path / "demo") as trainer:
            summary = trainer.fit()
    assert summary.steps == 40
    assert summary.warnings == ()
    assert warning_records(tmp_path / "demo") == []
