"""`python -m smallgpt.train` end to end, and DDP (torchrun, gloo, 2 CPU processes) against one
process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from smallgpt.checkpoint.load import load_model, load_tokenizer
from smallgpt.checkpoint.store import verify_checkpoint
from smallgpt.config.loader import load_config
from smallgpt.generate.decoding import generate_text
from smallgpt.train.cli import main as train_main
from smallgpt.train.logger import read_metrics

from tests.train_helpers import TINY, make_shards, run_tiny, single_thread, write_text_sample

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"))


def train_cli(*args: str, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = [sys.executable, *launcher, "-m", "smallgpt.train", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=ENV, timeout=300, check=False
    )


def test_cli_trains_from_raw_text_then_refuses_to_overwrite_then_resumes(tmp_path, capsys):
    text = write_text_sample(tmp_path / "sample.txt", 40_000)
    run = tmp_path / "run"
    overrides = [
        *TINY,
        f"data.text_files=[{text}]",
        "data.tokenizer_vocab_size=300",
        "train.max_steps=6",
        "log.tensorboard=true",
        "log.plot=true",
    ]
    first = train_cli("demo-cpu", *overrides, "--run-dir", str(run))
    assert first.returncode == 0, first.stderr
    assert "bits per byte" in first.stdout and str(run) in first.stdout

    resolved = load_config(run / "config.yaml")
    assert resolved.train.max_steps == 6 and resolved.model.embed_dim == 32
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [4, 6]
    assert all(r["val_bpb"] > 0 and r["val_ppl"] > 1 for r in val)
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(records[0])
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "samples.txt").read_text().startswith("--- step 4")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["val_bits_per_byte"] == pytest.approx(
        val[-1]["val_bpb"]
    )

    checkpoint = Path(summary["checkpoint"])
    verify_checkpoint(checkpoint)
    model, tokenizer = load_model(checkpoint), load_tokenizer(checkpoint)
    sample = generate_text(model, tokenizer, "ROMEO:", max_length=5, seed=0)
    assert sample.startswith("ROMEO:")

    # The same entry point in-process (no second interpreter start-up): refuse, then resume.
    assert train_main(["demo-cpu", *overrides, "--run-dir", str(run)]) == 1
    assert "already holds checkpoints" in capsys.readouterr().err
    resumed = [
        "demo-cpu",
        *overrides,
        "train.max_steps=8",
        "--run-dir",
        str(run),
        "--resume",
        "auto",
    ]
    assert train_main(resumed) == 0
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]

    # A learning rate changed on resume is not silently dropped.
    changed_lr = [*resumed[:-4], "train.max_steps=9", "optim.lr=1e-4", *resumed[-4:]]
    with pytest.warns(UserWarning, match=r"optim\.lr=0\.003.*optim\.lr=0\.0001"):
        assert train_main(changed_lr) == 0


def test_cli_config_mistakes_exit_2_with_the_fix(tmp_path, capsys):
    assert train_main(["demo-cpu", "optim.learning_rate=1e-3", "--run-dir", str(tmp_path)]) == 2
    assert "unknown key 'optim.learning_rate'; did you mean 'optim.lr'?" in capsys.readouterr().err
    assert train_main(["no-such-config.yaml"]) == 2
    assert "no-such-config.yaml" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was prepared or written


@pytest.mark.slow
def test_two_ddp_processes_match_one_process_with_the_same_global_batch(shards, tmp_path):
    # AdamW: the drift bound of the whole run below is Adam's (the demo preset's Muon turns the
    # same rounding-level gradient differences into larger changes by step 3: 0.6 %, measured).
    common = [
        *TINY,
        f"data.shard_dir={shards}",
        "train.max_steps=4",
        "train.eval_interval=2",
        "optim.name=adamw",
    ]
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    ddp = train_cli(
        "demo-cpu",
        *common,
        "data.text_files=[]",
        "train.batch_size=2",
        "--run-dir",
        str(tmp_path / "ddp"),
        launcher=torchrun,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    single, rec = run_tiny(shards, tmp_path / "single", *common[len(TINY) :], "train.batch_size=4")
    records = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 4  # one record per step: only rank 0 logs
    # The first steps agree to float rounding; a wrong normalisation across ranks would change
    # the gradient norm. Later steps drift: gradient sums round differently and Adam turns a
    # rounding-level change of a near-zero gradient into a full-size (sign) update.
    ddp_losses, ddp_norms = [r["loss"] for r in train], [r["grad_norm"] for r in train]
    assert ddp_losses[:2] == pytest.approx(rec.losses[:2], rel=1e-6)
    assert ddp_norms[:2] == pytest.approx([r.grad_norm for r in rec.steps[:2]], rel=1e-5)
    assert ddp_losses == pytest.approx(rec.losses, rel=1e-3)
    ddp_val = [r["val_loss"] for r in records if r["kind"] == "val"]
    assert ddp_val == pytest.approx(rec.val_losses, rel=1e-3)
    ddp_ckpt = tmp_path / "ddp" / "checkpoints"
    assert sorted(p.name for p in ddp_ckpt.iterdir()) == ["best", "step_00000002", "step_00000004"]
    tokens = json.loads((ddp_ckpt / "step_00000004" / "state.json").read_text())
    assert tokens["trainer"]["tokens_seen"] == single.tokens_seen


def test_demo_runs_the_whole_pipeline_on_the_bundled_text(tmp_path, capsys):
    from smallgpt.demo import main as demo_main

    overrides = [o for o in TINY if not o.startswith("log.")] + ["train.max_steps=4"]
    assert demo_main([*overrides, "--run-dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    bpb = float(out.split("validation bits per byte: ")[1].split()[0])
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert bpb == pytest.approx(summary["val_bits_per_byte"], abs=1e-4)
    meta = json.loads((tmp_path / "demo" / "data" / "meta.json").read_text())
    assert meta["val_fraction"] == 0.1
    for name in ("loss.png", "samples.txt", "demo_samples.txt", "metrics.jsonl"):
        assert (tmp_path / "demo" / name).stat().st_size > 0, name
    assert (tmp_path / "demo" / "demo_samples.txt").read_text().startswith("ROMEO:")
    verify_checkpoint(tmp_path / "demo" / "checkpoints" / "best")
