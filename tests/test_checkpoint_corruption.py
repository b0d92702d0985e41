"""Damaged checkpoints, beyond tests/test_checkpoint.py: a manifest whose hashes disagree, flipped
weight bits, an unreadable manifest; what the inference tools and `--resume` do with them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from smallgpt.checkpoint.load import load_model
from smallgpt.checkpoint.resolve import resolve_checkpoint
from smallgpt.checkpoint.store import (
    MANIFEST_FILE,
    MODEL_FILE,
    CheckpointError,
    CheckpointManager,
    find_latest_checkpoint,
)
from smallgpt.evaluate.cli import main as evaluate_main
from smallgpt.train.cli import main as train_main

from tests.eval_helpers import (  # noqa: F401 (one_torch_thread is a fixture)
    one_torch_thread,
    shakespeare,
    tiny_checkpoint,
    tiny_model,
    tiny_tokenizer,
)
from tests.train_helpers import TINY, make_shards, run_tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def manifest_disagrees(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"][MODEL_FILE]["sha256"] = "0" * 64
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


def flip_weight_bit(folder: Path) -> None:
    data = bytearray((folder / MODEL_FILE).read_bytes())
    data[-3] ^= 0x80  # a bit of the last tensor's data
    (folder / MODEL_FILE).write_bytes(bytes(data))


def garbage_manifest(folder: Path) -> None:
    (folder / MANIFEST_FILE).write_bytes(b"\x00{not json")


DAMAGE = {
    "manifest hash disagrees": (manifest_disagrees, f"{MODEL_FILE} does not match its sha256"),
    "flipped bit in the weights": (flip_weight_bit, f"{MODEL_FILE} does not match its sha256"),
    "manifest is not JSON": (garbage_manifest, f"unreadable {MANIFEST_FILE}"),
}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_checkpoint_is_skipped_and_refused_for_inference(tmp_path, capsys, tokenizer, case):
    damage, message = DAMAGE[case]
    model = tiny_model(tokenizer)
    manager = CheckpointManager(tmp_path / "run" / "checkpoints", keep_last=3)
    for step in (1, 2):
        manager.save(step, lambda p: tiny_checkpoint(p, tokenizer, model))
    newest = manager.path_for(2)
    damage(newest)

    with pytest.warns(UserWarning, match=f"step_00000002.*{message}"):
        assert find_latest_checkpoint(manager.root) == manager.path_for(1)
    with pytest.warns(UserWarning, match=message):
        assert resolve_checkpoint(tmp_path / "run") == manager.path_for(1)
    with pytest.raises(CheckpointError, match=message):
        load_model(newest)

    text = tmp_path / "text.txt"
    text.write_text(shakespeare(400))
    code = evaluate_main(["--checkpoint", str(newest), "--data", str(text), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and str(newest) in err and message in err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished tiny run with checkpoints at steps 1 and 2."""
    root = tmp_path_factory.mktemp("run")
    shards = make_shards(root)
    run = root / "run"
    run_tiny(shards, run, "train.max_steps=2", "checkpoint.interval=1", "optim.warmup_steps=0")
    return shards, run


def resume(capsys, shards: Path, run: Path, target: str, *overrides: str) -> tuple[int, str]:
    argv = [
        "demo-cpu",
        *TINY,
        "data.text_files=[]",
        f"data.shard_dir={shards}",
        "train.max_steps=3",
        "optim.warmup_steps=0",
        *overrides,
        "--run-dir",
        str(run),
        "--resume",
        target,
    ]
    code = train_main(argv)
    return code, capsys.readouterr().err


def test_resuming_from_a_damaged_checkpoint_fails_before_training(tmp_path, capsys, trained_run):
    shards, run = trained_run
    copy = tmp_path / "step_00000002"
    os.makedirs(copy)
    for file in (run / "checkpoints" / "step_00000002").iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    flip_weight_bit(copy)
    code, err = resume(capsys, shards, tmp_path / "elsewhere", str(copy))
    assert code == 1 and f"{MODEL_FILE} does not match its sha256" in err
    assert not (tmp_path / "elsewhere" / "checkpoints").exists()


def test_resuming_with_another_model_shape_names_the_differing_setting(capsys, trained_run):
    shards, run = trained_run
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    code, err = resume(capsys, shards, run, "auto", "model.embed_dim=64")
    assert code == 1
    assert "its weights do not fit this model (embed_dim: checkpoint 32, model 64)" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
