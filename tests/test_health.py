"""Training health checks: the detectors on synthetic curves, and real tiny runs that explode,
overfit (with early stopping) or stay healthy (the demo config)."""

from __future__ import annotations

import json
import math
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from smallgpt.config import ConfigError, DataSection, HealthSection, load_config
from smallgpt.health import (
    EXPLODING_GRADIENTS,
    OVERFITTING,
    PLATEAU,
    GradientSpikeDetector,
    OverfitDetector,
    PlateauDetector,
    TrainingHealthWarning,
)
from smallgpt.logger import read_metrics
from smallgpt.train import Trainer
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
    for step, (loss, norm) in enumerate(zip(losses, norms, strict=True), 1):
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


# ----------------------------------------------------------------------------- real runs


def warning_records(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == "warning"]


def test_lr_10_warns_once_of_exploding_gradients_naming_optim_lr(tmp_path):
    with single_thread():
        shards = make_shards(tmp_path)
        with pytest.warns(TrainingHealthWarning, match="exploding gradients.*optim.lr"):
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
    records = [r for r in warning_records(tmp_path / "run") if r["kind"] == EXPLODING_GRADIENTS]
    assert len(records) == 1
    assert "optim.lr" in records[0]["message"]
    assert records[0]["message"] in summary.warnings
    assert "optim.lr" in summary.format()
    assert tensorboard_texts(tmp_path / "run" / "tensorboard", "warnings/exploding_gradients") == [
        records[0]["message"]
    ]


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
    from smallgpt.prepare import prepare_data

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
    from smallgpt.train import main as train_main
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
    assert out.count("warning: exploding gradients") == 2
    assert out.index("warning: exploding gradients") < out.index("training finished")
    assert "optim.lr" in out


@pytest.mark.slow
def test_demo_config_short_run_fires_no_warning(tmp_path):
    config = load_config(
        "demo-cpu",
        [
            "train.max_steps=60",
            "train.eval_interval=20",
            "train.eval_batches=2",
            "train.max_time_minutes=null",
            "log.progress_bar=false",
            "log.tensorboard=false",
            "log.plot=false",
            "log.num_samples=0",
            "checkpoint.interval=null",
        ],
    )
    with single_thread(), warnings.catch_warnings():
        warnings.simplefilter("error", TrainingHealthWarning)
        with Trainer(config, run_dir=tmp_path / "demo") as trainer:
            summary = trainer.fit()
    assert summary.steps == 60
    assert summary.warnings == ()
    assert warning_records(tmp_path / "demo") == []
    assert {PLATEAU, OVERFITTING, EXPLODING_GRADIENTS}.isdisjoint(
        r.get("kind") for r in read_metrics(tmp_path / "demo" / "metrics.jsonl")
    )
