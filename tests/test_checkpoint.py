"""Checkpoint directories: exact round trip, atomic writes, corruption detection, retention."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from smallgpt.checkpoint.load import load_model, save_checkpoint
from smallgpt.checkpoint.rng import capture_rng_state, restore_rng_state
from smallgpt.checkpoint.store import (
    MANIFEST_FILE,
    MODEL_FILE,
    CheckpointError,
    CheckpointManager,
    find_latest_checkpoint,
    load_checkpoint,
    verify_checkpoint,
    write_checkpoint,
)
from smallgpt.config.schema import ModelConfig
from smallgpt.model.gpt import SmallGPT
from smallgpt.optim.schedule import get_cosine_schedule_with_warmup

from tests.train_helpers import single_thread

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():
        yield


def tiny_model(seed: int = 0, dropout: float = 0.1) -> SmallGPT:
    torch.manual_seed(seed)
    return SmallGPT(61, embed_dim=32, num_heads=4, num_layers=2, max_seq_len=16, dropout=dropout)


def parts(model: SmallGPT, optimizer: str = "adamw"):
    opt = model.configure_optimizers(
        weight_decay=0.1, lr=1e-2, betas=(0.9, 0.95), device_type="cpu", optimizer=optimizer
    )
    return opt, get_cosine_schedule_with_warmup(opt, 2, 20)


def train(model, opt, scheduler, steps: int, seed: int = 0) -> list[float]:
    """A few real steps; the batches come from a fixed generator, dropout from the global RNG."""
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        ids = torch.randint(0, 61, (4, 16), generator=gen)
        _, loss = model(ids, ids)
        loss.backward()
        opt.step()
        scheduler.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def write_some(path: Path, step: int = 3) -> Path:
    model = tiny_model()
    opt, scheduler = parts(model)
    train(model, opt, scheduler, step)
    return write_checkpoint(path, model, opt, scheduler, state={"step": step})


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resumed_objects_continue_bit_identically_to_the_originals(tmp_path, optimizer):
    model = tiny_model()
    opt, scheduler = parts(model, optimizer)
    train(model, opt, scheduler, 3)
    torch.manual_seed(123)  # dropout stream from here on
    write_checkpoint(tmp_path / "ck", model, opt, scheduler, state={"rng": capture_rng_state()})
    expected = train(model, opt, scheduler, 4, seed=1)

    fresh = tiny_model(seed=99)
    fresh_opt, fresh_scheduler = parts(fresh, optimizer)
    state = load_checkpoint(tmp_path / "ck", fresh, fresh_opt, fresh_scheduler)
    restore_rng_state(state["rng"])
    assert train(fresh, fresh_opt, fresh_scheduler, 4, seed=1) == expected
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert fresh_scheduler.state_dict() == scheduler.state_dict()


def test_rng_state_round_trip_covers_python_numpy_and_torch():
    state = capture_rng_state()
    first = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    restore_rng_state(json.loads(json.dumps(state)))
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == first


def test_compiled_model_is_saved_without_orig_mod_prefix_and_loads_for_inference(tmp_path):
    model = tiny_model(dropout=0.0)
    compiled = torch.compile(model)  # not run: the wrapper alone carries the `_orig_mod.` prefix
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    path = write_checkpoint(tmp_path / "ck", compiled)
    with safe_open(str(path / MODEL_FILE), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not any("_orig_mod" in k for k in keys)
    loaded = load_model(path, "cpu")
    assert not loaded.training
    ids = torch.randint(0, 61, (2, 16))
    model.eval()
    assert torch.equal(loaded(ids), model(ids))
    assert loaded.config == model.config


@dataclasses.dataclass
class _ConfigBeforeTheOneModelConfig:
    """The model config as checkpoints stored it before config and model shared one dataclass
    (model/config.py's own ModelConfig: these fields, in this order)."""

    vocab_size: int = 61
    embed_dim: int = 32
    num_heads: int = 4
    num_layers: int = 2
    max_seq_len: int = 16
    dropout: float = 0.0
    bias: bool = True
    attention: str = "sdpa"
    pad_token_id: int | None = 60


@dataclasses.dataclass
class _ConfigFromANewerVersion(_ConfigBeforeTheOneModelConfig):
    rotary: bool = True


def test_checkpoint_with_the_old_model_config_json_loads(tmp_path):
    old = _ConfigBeforeTheOneModelConfig()
    model = SmallGPT.from_config(ModelConfig(**dataclasses.asdict(old))).eval()
    model.config = old  # what write_checkpoint stores is the JSON of the old dataclass
    path = write_checkpoint(tmp_path / "old", model)
    loaded = load_model(path)
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(old)
    ids = torch.randint(0, 61, (2, 16))
    assert torch.equal(loaded(ids), model(ids))
    model.config = _ConfigFromANewerVersion()
    with pytest.raises(CheckpointError, match="unknown model config keys \\['rotary'\\]"):
        load_model(write_checkpoint(tmp_path / "newer", model))


def test_guide_save_checkpoint_writes_the_verified_directory_format(tmp_path):
    model = tiny_model()
    opt, scheduler = parts(model)
    train(model, opt, scheduler, 2)
    path = save_checkpoint(model, opt, scheduler, 2, 3.25, path=tmp_path / "guide")
    manifest = verify_checkpoint(path)
    assert set(manifest["files"]) == {"model.safetensors", "optimizer.safetensors", "state.json"}
    state = load_checkpoint(path, tiny_model(seed=5), *parts(tiny_model(seed=5)))
    assert (state["step"], state["loss"]) == (2, 3.25)
    json.loads((path / "state.json").read_text())  # plain JSON, nothing pickled


def test_crash_during_write_leaves_the_previous_checkpoint_and_no_partial_one(tmp_path):
    root = tmp_path / "checkpoints"
    # The child saves step 1, then dies (os._exit, no cleanup) in the middle of saving step 2:
    # after two of the step-2 files have been flushed to disk.
    script = textwrap.dedent(
        f"""
        import os, torch
        import smallgpt.checkpoint.store as ck
        from smallgpt.model import SmallGPT
        torch.manual_seed(0)
        model = SmallGPT(61, embed_dim=32, num_heads=4, num_layers=2, max_seq_len=16)
        opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
        manager = ck.CheckpointManager({str(root)!r})
        manager.save(1, lambda p: ck.write_checkpoint(p, model, opt, state={{"step": 1}}))
        real, calls = ck._fsync_path, []
        def crash(path):
            real(path)
            calls.append(path)
            if len(calls) == 2:
                os._exit(3)
        ck._fsync_path = crash
        manager.save(2, lambda p: ck.write_checkpoint(p, model, opt, state={{"step": 2}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 3, proc.stderr
    names = sorted(p.name for p in root.iterdir())
    assert "step_00000001" in names and "step_00000002" not in names
    assert any(n.startswith(".tmp-step_00000002") for n in names)  # the torn write, hidden
    assert find_latest_checkpoint(root) == root / "step_00000001"
    verify_checkpoint(root / "step_00000001")
    CheckpointManager(root)  # a new run cleans up the leftovers
    assert sorted(p.name for p in root.iterdir()) == ["step_00000001"]


def test_failed_write_removes_its_temporary_directory_and_keeps_the_old_one(tmp_path):
    class BrokenTokenizer:
        def save(self, path: str) -> None:
            raise OSError("disk full")

    first = write_some(tmp_path / "ck")
    before = (first / MANIFEST_FILE).read_bytes()
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path / "ck", tiny_model(seed=1), tokenizer=BrokenTokenizer())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert (first / MANIFEST_FILE).read_bytes() == before
    verify_checkpoint(first)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def edit_state(path: Path) -> None:
    state = json.loads(path.read_text())
    state["trainer"]["step"] = 999
    path.write_text(json.dumps(state))


CORRUPTIONS = {
    "truncated weights": ("model.safetensors", truncate, "truncated"),
    "bit flip in optimizer state": ("optimizer.safetensors", flip_bit, "sha256"),
    "edited state.json": ("state.json", edit_state, "state.json"),
    "missing manifest": ("manifest.json", os.remove, "missing manifest.json"),
    "missing weights": ("model.safetensors", os.remove, "model.safetensors is missing"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_newest_checkpoint_is_skipped_with_a_warning_naming_the_file(tmp_path, case):
    name, damage, message = CORRUPTIONS[case]
    manager = CheckpointManager(tmp_path, keep_last=3)
    for step in (10, 20):
        manager.save(step, lambda p, s=step: write_some(p, step=s))
    damage(tmp_path / "step_00000020" / name)
    with pytest.warns(UserWarning, match=f"step_00000020.*{message}"):
        assert find_latest_checkpoint(tmp_path) == tmp_path / "step_00000010"
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path / "step_00000020")
    assert isinstance(load_model(tmp_path / "step_00000010"), SmallGPT)


def test_loading_an_empty_or_missing_directory_says_what_is_wrong(tmp_path):
    with pytest.raises(CheckpointError, match="missing manifest.json"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    manager = CheckpointManager(tmp_path / "run")
    manager.save(5, write_some)
    with pytest.raises(CheckpointError, match="it contains checkpoints: step_00000005"):
        load_model(tmp_path / "run")


def test_manager_keeps_the_last_n_and_the_best_survives_pruning(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        path = manager.save(step, lambda p, s=step: write_some(p, step=s))
        if step == 1:
            manager.mark_best(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "step_00000002", "step_00000003"]
    verify_checkpoint(tmp_path / "best")
    state = json.loads((tmp_path / "best" / "state.json").read_text())
    assert state["trainer"]["step"] == 1
    manager.mark_best(tmp_path / "step_00000003")
    assert json.loads((tmp_path / "best" / "state.json").read_text())["trainer"]["step"] == 3


def test_no_pickle_loading_in_the_package():
    sources = (REPO / "python" / "smallgpt").rglob("*.py")
    offenders = [
        p.name for p in sources if "torch.load(" in p.read_text() or "pickle.load" in p.read_text()
    ]
    assert offenders == []
