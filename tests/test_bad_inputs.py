"""Bad configs and bad data stop `python -m smallgpt.train` with a clear error naming the cause,
before any training step, checkpoint or metric is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from smallgpt.train.cli import main

from tests.eval_helpers import one_torch_thread, tiny_tokenizer  # noqa: F401 (a fixture)
from tests.train_helpers import TINY, make_shards, write_text_sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG_MISTAKES = {
    "unknown key": (["optim.learning_rate=1e-3"], "did you mean 'optim.lr'?"),
    "wrong type": (["train.batch_size=big"], "train.batch_size: expected int, got str 'big'"),
    "negative learning rate": (["optim.lr=-0.001"], "optim.lr must be > 0 (got -0.001)"),
    "empty batch": (["train.batch_size=0"], "train.batch_size must be >= 1 (got 0)"),
    "window longer than the model": (
        ["data.seq_len=64"],
        "data.seq_len (64) exceeds model.max_seq_len (32)",
    ),
}


def train(capsys, tmp_path: Path, *overrides: str, config: str = "demo-cpu") -> tuple[int, str]:
    code = main(
        [config, *TINY, "train.max_steps=2", *overrides, "--run-dir", str(tmp_path / "run")]
    )
    return code, capsys.readouterr().err


def nothing_trained(run: Path) -> bool:
    return not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()


@pytest.mark.parametrize("case", list(CONFIG_MISTAKES))
def test_config_mistakes_stop_the_cli_before_anything_is_written(tmp_path, capsys, case):
    overrides, message = CONFIG_MISTAKES[case]
    text = write_text_sample(tmp_path / "text.txt", 5000)
    code, err = train(capsys, tmp_path, f"data.text_files=[{text}]", *overrides)
    assert code == 2 and message in err, err
    assert not (tmp_path / "run").exists()


def test_unknown_key_in_a_config_file_is_named_with_the_file(tmp_path, capsys):
    config = tmp_path / "my.yaml"
    config.write_text("train:\n  max_step: 5\n", encoding="utf-8")
    code, err = train(capsys, tmp_path, config=str(config))
    assert code == 2 and "unknown key 'train.max_step'; did you mean 'train.max_steps'?" in err
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"))


def data_mistakes(root: Path, shards: Path) -> dict[str, tuple[list[str], str]]:
    """Overrides that give the trainer bad data, and what its error must say."""
    (root / "empty.txt").write_text("", encoding="utf-8")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (root / "short.txt").write_text("To be, or not to be", encoding="utf-8")
    tiny_tokenizer(vocab_size=290).save(root / "other.json")
    (root / "hf.json").write_text('{"version": "1.0", "model": {"type": "BPE"}}')
    raw = ["data.tokenizer_vocab_size=300"]
    prepared = ["data.text_files=[]", f"data.shard_dir={shards}"]
    return {
        "empty file": ([f"data.text_files=[{root / 'empty.txt'}]", *raw], "empty corpus"),
        "binary file": ([f"data.text_files=[{root / 'binary.txt'}]", *raw], "not UTF-8"),
        "smaller than one window": (
            [f"data.text_files=[{root / 'short.txt'}]", *raw],
            "fewer than seq_len=32",
        ),
        "missing file": ([f"data.text_files=[{root / 'nope.txt'}]"], "data.text_files[0]"),
        "tokenizer of another vocabulary": (
            [*prepared, f"data.tokenizer={root / 'other.json'}"],
            "is not the tokenizer the shards",
        ),
        "not a smallgpt tokenizer": (
            [f"data.text_files=[{root / 'short.txt'}]", f"data.tokenizer={root / 'hf.json'}"],
            "not a smallgpt tokenizer file",
        ),
        "model vocabulary smaller than the tokenizer's": (
            [*prepared, "model.vocab_size=100"],
            "model.vocab_size (100) is smaller than the tokenizer's vocabulary (300)",
        ),
        "missing shards": (["data.text_files=[]", f"data.shard_dir={root / 'none'}"], "meta.json"),
    }


DATA_CASES = [
    "empty file",
    "binary file",
    "smaller than one window",
    "missing file",
    "tokenizer of another vocabulary",
    "not a smallgpt tokenizer",
    "model vocabulary smaller than the tokenizer's",
    "missing shards",
]


@pytest.mark.parametrize("case", DATA_CASES)
@pytest.mark.filterwarnings("ignore:the trained vocabulary has")  # the short text's tokenizer
def test_bad_data_stops_the_cli_before_training_with_the_cause(tmp_path, capsys, shards, case):
    overrides, message = data_mistakes(tmp_path, shards)[case]
    code, err = train(capsys, tmp_path, *overrides)
    assert code == 1 and err.startswith("error: ") and message in err, err
    assert nothing_trained(tmp_path / "run")
