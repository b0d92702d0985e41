"""`python -m smallgpt.generate`: the streamed text equals `generate_text` with the same seed;
prompts from stdin and files; clear errors for bad checkpoints and foreign tokenizers."""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys

import pytest
from smallgpt.checkpoint.store import MODEL_FILE, CheckpointManager
from smallgpt.generate.cli import main, stream_sample
from smallgpt.generate.decoding import generate_text
from smallgpt.model.precision import to_inference_dtype

from tests.eval_helpers import (  # noqa: F401 (one_torch_thread is a fixture)
    one_torch_thread,
    shakespeare,
    tiny_checkpoint,
    tiny_model,
    tiny_tokenizer,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SAMPLING = {"temperature": 0.9, "top_k": 40}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer, seed=7)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer, model):
    return tiny_checkpoint(tmp_path_factory.mktemp("ck") / "step_1", tokenizer, model)


def run_cli(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def expected_text(model, tokenizer, prompt: str, seed: int, tokens: int = 30) -> str:
    return generate_text(model, tokenizer, prompt, max_length=tokens, seed=seed, **SAMPLING)


def sampling_args(seed: int) -> list[object]:
    return ["--max-new-tokens", 30, "--temperature", 0.9, "--top-k", 40, "--seed", seed]


@pytest.mark.parametrize("stream", [True, False])
def test_cli_prints_what_generate_text_gives_with_the_same_seed(
    capsys, checkpoint, model, tokenizer, stream
):
    flags = ["--stream"] if stream else []
    code, out, err = run_cli(
        capsys, "--checkpoint", checkpoint, "--prompt", "ROMEO:", *sampling_args(5), *flags
    )
    assert code == 0, err
    assert out == expected_text(model, tokenizer, "ROMEO:", seed=5) + "\n"
    assert f"checkpoint {checkpoint}" in err


@pytest.mark.parametrize("dtype", ["int8", "bf16"])
def test_dtype_option_prints_what_generate_text_gives_on_the_converted_model(
    capsys, checkpoint, model, tokenizer, dtype
):
    code, out, err = run_cli(
        capsys,
        "--checkpoint",
        checkpoint,
        "--prompt",
        "ROMEO:",
        "--dtype",
        dtype,
        *sampling_args(5),
    )
    assert code == 0, err
    converted = to_inference_dtype(copy.deepcopy(model), dtype)
    assert out == expected_text(converted, tokenizer, "ROMEO:", seed=5) + "\n"
    assert f"checkpoint {checkpoint} ({dtype})" in err


def test_unknown_dtype_is_refused_naming_the_choices(capsys, checkpoint):
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(checkpoint), "--dtype", "fp16"])
    assert exit_info.value.code == 2
    assert "--dtype: invalid choice: 'fp16'" in capsys.readouterr().err


def test_streaming_writes_text_piece_by_piece(model, tokenizer):
    pieces: list[str] = []
    text = stream_sample(
        model, tokenizer, "JULIET:", pieces.append, max_new_tokens=30, seed=2, **SAMPLING
    )
    assert len(pieces) > 1 and "".join(pieces) == text
    assert "JULIET:" + text == expected_text(model, tokenizer, "JULIET:", seed=2)


def test_samples_use_consecutive_seeds_and_prompt_files_give_one_prompt_per_line(
    tmp_path, capsys, checkpoint, model, tokenizer
):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ROMEO:\n\nFirst Citizen:\n", encoding="utf-8")
    code, out, _ = run_cli(
        capsys,
        "--checkpoint",
        checkpoint,
        "--prompt-file",
        prompts,
        "--num-samples",
        2,
        *sampling_args(11),
    )
    assert code == 0
    expected = "".join(
        f"--- prompt {p + 1}, sample {j + 1}\n"
        + expected_text(model, tokenizer, prompt, seed=11 + j)
        + "\n"
        for p, prompt in enumerate(["ROMEO:", "First Citizen:"])
        for j in range(2)
    )
    assert out == expected


def test_prompt_from_stdin_and_empty_prompt(monkeypatch, capsys, checkpoint, model, tokenizer):
    monkeypatch.setattr(sys, "stdin", io.StringIO("KING RICHARD:\n"))
    code, out, _ = run_cli(capsys, "--checkpoint", checkpoint, "--prompt", "-", *sampling_args(3))
    assert code == 0 and out == expected_text(model, tokenizer, "KING RICHARD:", seed=3) + "\n"
    code, out, _ = run_cli(capsys, "--checkpoint", checkpoint, *sampling_args(4))
    assert code == 0 and out == expected_text(model, tokenizer, "", seed=4) + "\n"


def test_module_entry_point_streams_from_a_run_directory(tmp_path, tokenizer, model):
    manager = CheckpointManager(tmp_path / "run" / "checkpoints")
    path = manager.save(3, lambda p: tiny_checkpoint(p, tokenizer, model))
    manager.mark_best(path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "smallgpt.generate",
            "--checkpoint",
            str(tmp_path / "run"),
            "--prompt",
            "-",
            "--stream",
            *map(str, sampling_args(9)),
        ],
        input="ROMEO:",
        capture_output=True,
        check=False,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected_text(model, tokenizer, "ROMEO:", seed=9) + "\n"
    assert "run/checkpoints/best" in proc.stderr


def test_run_directory_falls_back_past_damaged_checkpoints(tmp_path, capsys, tokenizer, model):
    manager = CheckpointManager(tmp_path / "checkpoints", keep_last=3)
    for step in (1, 2):
        manager.save(step, lambda p: tiny_checkpoint(p, tokenizer, model))
    manager.mark_best(manager.path_for(2))
    weights = manager.path_for(2) / MODEL_FILE  # best/ is a hard link: both are damaged
    weights.write_bytes(weights.read_bytes()[:-9])
    with pytest.warns(UserWarning) as warned:
        code, _, err = run_cli(capsys, "--checkpoint", tmp_path, *sampling_args(1))
    assert code == 0 and f"checkpoint {manager.path_for(1)}" in err
    messages = [str(w.message) for w in warned]
    assert any("best" in m and MODEL_FILE in m for m in messages)
    assert any("step_00000002" in m and MODEL_FILE in m for m in messages)


def test_bad_checkpoints_and_options_give_clear_errors(tmp_path, capsys, checkpoint):
    (tmp_path / "empty").mkdir()
    cases = [
        (["--checkpoint", tmp_path / "nowhere"], "does not exist"),
        (["--checkpoint", tmp_path / "empty"], "holds no checkpoint"),
        (["--checkpoint", checkpoint, "--max-new-tokens", 0], "--max-new-tokens must be >= 1"),
        (["--checkpoint", checkpoint, "--num-samples", 0], "--num-samples must be >= 1"),
        (["--checkpoint", checkpoint, "--top-p", 1.5], "--top-p must be in (0, 1]"),
        (["--checkpoint", checkpoint, "--top-k", 0], "--top-k must be >= 1"),
        (["--checkpoint", checkpoint, "--temperature", -1], "--temperature must be >= 0"),
        (["--checkpoint", checkpoint, "--prompt-file", tmp_path / "none.txt"], "none.txt"),
        (["--checkpoint", checkpoint, "--device", "tpu"], "device"),
    ]
    for args, message in cases:
        code, out, err = run_cli(capsys, *args)
        assert code == 1 and out == "" and message in err, (args, err)


def test_loading_a_corrupt_checkpoint_names_the_file(tmp_path, capsys, tokenizer, model):
    path = tiny_checkpoint(tmp_path / "ck", tokenizer, model)
    data = bytearray((path / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / MODEL_FILE).write_bytes(bytes(data))
    code, out, err = run_cli(capsys, "--checkpoint", path)
    assert code == 1 and out == ""
    assert f"{MODEL_FILE} does not match its sha256" in err


def test_tokenizer_that_does_not_match_the_model_is_refused(tmp_path, capsys, tokenizer, model):
    bigger = tiny_tokenizer(vocab_size=320)
    bigger.save(tmp_path / "bigger.json")
    same_size = tiny_tokenizer(vocab_size=300, num_chars=8000)  # other merges, same size
    assert (
        same_size.vocab_size == tokenizer.vocab_size and same_size.to_json() != tokenizer.to_json()
    )
    same_size.save(tmp_path / "other.json")
    tokenizer.save(tmp_path / "own.json")
    with_own = tiny_checkpoint(tmp_path / "with", tokenizer, model)
    without = tiny_checkpoint(tmp_path / "without", None, model)
    cases = [
        ([with_own, "--tokenizer", tmp_path / "other.json"], "is not the tokenizer checkpoint"),
        ([without, "--tokenizer", tmp_path / "bigger.json"], "has 320 ids but the model's"),
        ([without], "has no tokenizer.json; pass --tokenizer"),
    ]
    for args, message in cases:
        code, _, err = run_cli(capsys, "--checkpoint", *args)
        assert code == 1 and message in err, (args, err)
    code, out, err = run_cli(
        capsys, "--checkpoint", without, "--tokenizer", tmp_path / "own.json", *sampling_args(6)
    )
    assert code == 0, err
    assert out == expected_text(model, tokenizer, "", seed=6) + "\n"
