"""The training loop on CPU: exact accumulation, exact resume, non-finite handling, validation."""

from __future__ import annotations

import math
import os
import signal
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from smallgpt.checkpoint.store import find_latest_checkpoint
from smallgpt.data.datasets import TokenShardDataset
from smallgpt.data.shards import load_meta
from smallgpt.model.gpt import SmallGPT
from smallgpt.train.step import TrainingDivergedError, accumulate_gradients, apply_update
from smallgpt.train.trainer import Trainer, TrainerCallback

from tests.train_helpers import (
    make_shards,
    run_tiny,
    single_thread,
    tiny_config,
    write_text_sample,
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_accumulated_micro_batches_give_the_gradient_of_one_large_batch():
    torch.manual_seed(0)
    pad = 60
    model = SmallGPT(
        61, embed_dim=32, num_heads=4, num_layers=2, max_seq_len=16, dropout=0.0, pad_token_id=pad
    )
    ids = torch.randint(0, 60, (8, 16))
    labels = ids.clone()
    # Unevenly many scored tokens per micro-batch: padding and ignored labels in some rows only.
    ids[1, 10:] = pad
    labels[1, 10:] = pad
    labels[2, :13] = -100
    labels[5, 3:] = -100

    # Reference: plain PyTorch mean cross-entropy over every scored token of the whole batch.
    logits = model(ids)
    targets = labels[:, 1:].masked_fill(labels[:, 1:] == pad, -100)
    F.cross_entropy(logits[:, :-1].reshape(-1, 61), targets.reshape(-1)).backward()
    expected = grads(model)
    model.zero_grad()

    micro = [(ids[i : i + 2], labels[i : i + 2]) for i in range(0, 8, 2)]
    total = sum(int(model.count_real_tokens(y)) for _, y in micro)
    loss_sum = accumulate_gradients(model, micro, total)
    got = grads(model)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-7, msg=name)
    assert loss_sum.item() / total == pytest.approx(
        F.cross_entropy(logits[:, :-1].reshape(-1, 61), targets.reshape(-1)).item(), rel=1e-5
    )

    # Averaging per-micro-batch means instead would be measurably different on this batch.
    model.zero_grad()
    for x, y in micro:
        (model(x, y)[1] / len(micro)).backward()
    naive = grads(model)
    assert not torch.allclose(
        naive["transformer.wte.weight"], expected["transformer.wte.weight"], rtol=1e-3
    )


class SignalAt(TrainerCallback):
    """Sends this process a real signal after the given step."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum = step, signum

    def on_step_end(self, trainer, result) -> None:
        if result.step == self.step:
            os.kill(os.getpid(), self.signum)


def _one_update(skipped: bool, loss: float, scale: float | None):
    """A linear layer after one backward pass and `apply_update`, with its SGD reference."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in layer.parameters()]
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.1**step)
    scaler = None if scale is None else torch.amp.GradScaler("cpu", init_scale=scale)
    out = layer(torch.randn(4, 3)).square().sum()
    (out if scaler is None else scaler.scale(out)).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)
    expected = [p.detach() - 0.5 * p.grad for p in layer.parameters()]  # one plain SGD step
    failure = apply_update(optimizer, scheduler, scaler, skipped=skipped, loss=loss)
    after = list(layer.parameters())
    assert all(p.grad is None for p in after)  # cleared either way
    return failure, before, after, expected, optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("scale", [None, 4.0])
def test_apply_update_steps_the_optimizer_and_the_schedule(scale):
    failure, _, after, expected, lr = _one_update(skipped=False, loss=1.0, scale=scale)
    assert failure is False and lr == pytest.approx(0.05)
    for param, reference in zip(after, expected, strict=True):
        torch.testing.assert_close(param.detach(), reference)


@pytest.mark.parametrize(
    ("loss", "scale", "counts"),
    [
        (math.nan, None, True),
        (math.inf, None, True),
        (1.0, 4.0, False),  # finite loss, gradients overflowed at a scale > 1: the scaler's job
        (1.0, 1.0, True),  # ... but not once the scale is down to 1
        (math.nan, 4.0, True),
    ],
)
def test_a_skipped_update_changes_nothing_and_says_whether_it_counts(loss, scale, counts):
    failure, before, after, _, lr = _one_update(skipped=True, loss=loss, scale=scale)
    assert failure is counts and lr == 0.5  # the schedule did not advance
    for param, original in zip(after, before, strict=True):
        assert torch.equal(param.detach(), original)


def test_resume_after_sigterm_gives_bit_identical_losses(shards, tmp_path):
    options = ["model.dropout=0.1", "train.max_steps=8"]  # dropout: the RNG state must resume too
    straight, straight_rec = run_tiny(shards, tmp_path / "straight", *options)

    first, first_rec = run_tiny(shards, tmp_path / "split", *options, callbacks=[SignalAt(3)])
    assert first.stop_reason == "signal SIGTERM"
    assert first.steps == 3 and first.val_loss is None  # saved at once, no validation
    latest = find_latest_checkpoint(tmp_path / "split" / "checkpoints")
    assert latest.name == "step_00000003"
    second, second_rec = run_tiny(shards, tmp_path / "split", *options, resume="auto")

    assert first_rec.losses + second_rec.losses == straight_rec.losses
    assert second.val_loss == straight.val_loss
    assert second.tokens_seen == straight.tokens_seen
    final = "checkpoints/step_00000008/model.safetensors"
    a, b = load_file(tmp_path / "straight" / final), load_file(tmp_path / "split" / final)
    assert all(torch.equal(a[k], b[k]) for k in a)


class PoisonAttempts(TrainerCallback):
    """Makes the final LayerNorm output NaN on the chosen step attempts (1-based, skips count)."""

    def __init__(self, attempts: set[int] | None = None, start: int | None = None) -> None:
        self.attempts, self.start, self.count = attempts or set(), start, 0
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def _poisoned(self, attempt: int) -> bool:
        return attempt in self.attempts or (self.start is not None and attempt >= self.start)

    def on_train_start(self, trainer) -> None:
        def hook(module, inputs, output):
            return output * math.nan if self._poisoned(self.count + 1) else output

        trainer.raw_model.transformer.ln_f.register_forward_hook(hook)
        self.snapshots.append(self._weights(trainer))

    def on_step_end(self, trainer, result) -> None:
        self.count += 1
        self.snapshots.append(self._weights(trainer))

    @staticmethod
    def _weights(trainer) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}


def test_non_finite_steps_are_skipped_without_any_update(shards, tmp_path):
    poison = PoisonAttempts(attempts={3, 4})
    summary, rec = run_tiny(shards, tmp_path / "run", "train.max_steps=6", callbacks=[poison])
    assert [r.skipped for r in rec.steps] == [False, False, True, True, False, False, False, False]
    assert [r.step for r in rec.steps] == [1, 2, 2, 2, 3, 4, 5, 6]
    before, after = poison.snapshots[2], poison.snapshots[4]  # around the two skipped attempts
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert rec.steps[4].lr == rec.steps[2].lr  # the schedule did not advance either
    assert summary.steps == 6 and summary.skipped_steps == 2
    assert math.isfinite(summary.val_loss)


def test_training_stops_with_a_clear_error_after_too_many_non_finite_steps(shards, tmp_path):
    poison = PoisonAttempts(start=3)
    with pytest.raises(TrainingDivergedError, match=r"3 steps in a row .*max_nonfinite_steps=3"):
        run_tiny(shards, tmp_path / "run", "train.max_nonfinite_steps=3", callbacks=[poison])
    assert poison.count == 4  # two good steps, two poisoned; the third raises before its hook


def test_validation_bits_per_byte_matches_a_direct_computation(shards, tmp_path):
    config = tiny_config(shards, "train.eval_batches=null", "train.max_steps=2")
    with Trainer(config, run_dir=tmp_path / "run") as trainer:
        trainer.fit()
        result = trainer.evaluate()
        model, tokenizer = trainer.raw_model.eval(), trainer.tokenizer

    windows = TokenShardDataset(shards, "val", 32)
    nats, tokens, num_bytes = 0.0, 0, 0
    with torch.no_grad():
        for i in range(len(windows)):
            item = windows[i]
            logits = model(item["input_ids"][None])[0, :-1].double()
            targets = item["labels"][1:]
            scored = targets != -100
            nats += F.cross_entropy(logits[scored], targets[scored], reduction="sum").item()
            tokens += int(scored.sum())
            specials = set(tokenizer.special_tokens.values())
            num_bytes += sum(
                0 if t in specials else len(tokenizer.id_to_bytes(t))
                for t in targets[scored].tolist()
            )
    assert result.tokens == tokens
    assert result.num_bytes == num_bytes
    assert result.loss == pytest.approx(nats / tokens, rel=1e-6)
    assert result.bits_per_byte == pytest.approx(nats / math.log(2) / num_bytes, rel=1e-6)
    assert result.perplexity == pytest.approx(math.exp(nats / tokens), rel=1e-6)
    # every validation token but the first is scored, so the bytes are the split's text bytes
    first = int(windows[0]["input_ids"][0])
    val_bytes = load_meta(shards)["splits"]["val"]["text_bytes"]
    assert num_bytes == val_bytes - len(tokenizer.id_to_bytes(first))


class StopAt(TrainerCallback):
    def on_step_end(self, trainer, result) -> None:
        if result.step == 3:
            trainer.request_stop("plateau")


def test_a_callback_can_stop_training_which_still_validates_and_saves(shards, tmp_path):
    summary, _ = run_tiny(shards, tmp_path / "run", callbacks=[StopAt()])
    assert (summary.stop_reason, summary.steps) == ("plateau", 3)
    assert summary.val_loss is not None and summary.checkpoint.endswith("step_00000003")


class Slow(TrainerCallback):
    def on_step_end(self, trainer, result) -> None:
        time.sleep(0.4)


def test_time_budget_stops_training_then_validates_and_saves(shards, tmp_path):
    # 0.6 s budget, at least 0.4 s per step: the budget runs out after the first or second step
    summary, _ = run_tiny(
        shards, tmp_path / "run", "train.max_time_minutes=0.01", callbacks=[Slow()]
    )
    assert summary.steps in (1, 2) and "time budget of 0.01 minutes" in summary.stop_reason
    assert summary.val_loss is not None
    assert summary.checkpoint.endswith(f"step_{summary.steps:08d}")


def test_fresh_run_refuses_a_run_directory_with_checkpoints(shards, tmp_path):
    run_tiny(shards, tmp_path / "run", "train.max_steps=1", "optim.warmup_steps=0")
    with pytest.raises(FileExistsError, match="--resume auto"):
        run_tiny(shards, tmp_path / "run", "train.max_steps=2")


def test_resume_auto_skips_a_corrupt_newest_checkpoint(shards, tmp_path):
    run_tiny(
        shards,
        tmp_path / "run",
        "checkpoint.interval=2",
        "checkpoint.keep_last=3",
        "train.max_steps=4",
        "train.eval_interval=100",
    )
    newest = tmp_path / "run" / "checkpoints" / "step_00000004" / "optimizer.safetensors"
    newest.write_bytes(newest.read_bytes()[:-1])
    with pytest.warns(UserWarning, match="step_00000004.*optimizer.safetensors"):
        _, rec = run_tiny(shards, tmp_path / "run", "train.max_steps=5", resume="auto")
    assert [r.step for r in rec.steps] == [3, 4, 5]


def test_resume_with_another_learning_rate_warns_and_keeps_the_checkpoints(shards, tmp_path):
    schedule = ["optim.warmup_steps=0", "optim.min_lr_ratio=0.5", "train.max_steps=4"]
    saves = ["checkpoint.interval=2", "checkpoint.keep_last=2"]
    _, whole = run_tiny(shards, tmp_path / "whole", *schedule, *saves, "optim.lr=1e-3")
    halfway = tmp_path / "whole" / "checkpoints" / "step_00000002"
    with pytest.warns(UserWarning, match=r"optim.lr=0.001, the config says optim.lr=0.002") as rec:
        _, resumed = run_tiny(shards, tmp_path / "run", *schedule, "optim.lr=2e-3", resume=halfway)
    # the warning points at the Trainer(...) call, not inside the trainer
    assert any(w.filename.endswith("train_helpers.py") for w in rec)
    assert [r.lr for r in resumed.steps] == pytest.approx([r.lr for r in whole.steps[2:]])


def test_wandb_requested_but_not_installed_is_a_clear_error(shards, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    with pytest.raises(ImportError, match=r"log.wandb=true needs .*pip install wandb"):
        run_tiny(shards, tmp_path / "run", "log.wandb=true")


def test_loss_plot_is_skipped_with_one_note_without_matplotlib(tmp_path, monkeypatch, capsys):
    from smallgpt.train import plot

    records = [
        {"kind": "train", "step": 1, "loss": 3.0},
        {"kind": "val", "step": 1, "val_loss": 3.1},
    ]
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    plot._figure_class.cache_clear()
    try:
        assert plot.plot_loss_curves(records, tmp_path / "a.png") is None
        assert plot.plot_loss_curves(records, tmp_path / "b.png") is None
    finally:
        plot._figure_class.cache_clear()
    assert capsys.readouterr().err.count("matplotlib is not installed") == 1
    assert not any(tmp_path.iterdir())


def test_prepared_shards_are_reused_until_their_inputs_change(tmp_path):
    from smallgpt.config.schema import DataSection
    from smallgpt.data.prepare import prepare_data

    text = write_text_sample(tmp_path / "sample.txt", 20_000)
    data = DataSection(text_files=[str(text)], tokenizer_vocab_size=300, val_fraction=0.1)
    first = prepare_data(data, tmp_path / "run", show_progress=False)
    stamp = (first.shard_dir / "train.bin").stat().st_mtime_ns
    again = prepare_data(data, tmp_path / "run", show_progress=False)
    assert (again.shard_dir / "train.bin").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert again.tokenizer.encode("ROMEO:") == first.tokenizer.encode("ROMEO:")

    bigger = DataSection(text_files=[str(text)], tokenizer_vocab_size=320, val_fraction=0.1)
    rebuilt = prepare_data(bigger, tmp_path / "run", show_progress=False)
    assert rebuilt.tokenizer.vocab_size == 320 and rebuilt.meta["vocab_size"] == 320

    # Prepared shards alone carry their tokenizer; a different tokenizer file is refused.
    shards_only = DataSection(shard_dir=str(rebuilt.shard_dir))
    assert prepare_data(shards_only, tmp_path / "other", show_progress=False).meta == rebuilt.meta
    first.tokenizer.save(tmp_path / "old-tokenizer.json")
    mismatched = DataSection(
        shard_dir=str(rebuilt.shard_dir), tokenizer=str(tmp_path / "old-tokenizer.json")
    )
    with pytest.raises(ValueError, match="not the tokenizer the shards"):
        prepare_data(mismatched, tmp_path / "other", show_progress=False)
    with pytest.raises(FileNotFoundError, match=r"data.text_files\[0\]: .*not found: missing.txt"):
        prepare_data(DataSection(text_files=["missing.txt"]), tmp_path / "x", show_progress=False)


def test_a_run_shorter_than_its_warmup_warms_up_over_its_steps_and_says_so(
    shards, tmp_path, capsys
):
    lr, steps = 3e-3, 5
    _, recorder = run_tiny(
        shards,
        tmp_path / "run",
        f"train.max_steps={steps}",
        "optim.warmup_steps=60",
        f"optim.lr={lr}",
    )
    # step n (1-based) trains with the factor after n - 1 scheduler steps: (n - 1) / steps
    assert [r.lr for r in recorder.steps] == pytest.approx([lr * n / steps for n in range(steps)])
    err = capsys.readouterr().err
    assert err.count("optim.warmup_steps (60) exceeds train.max_steps (5)") == 1
    assert "shortened to the run's 5 steps" in err
