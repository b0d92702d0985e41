"""Running out of GPU memory gives advice that keeps the optimization the same: a smaller
micro-batch with more accumulation (simulated on CPU with a raised torch.OutOfMemoryError)."""

from __future__ import annotations

import re

import pytest
import torch
from smallgpt.train.cli import main
from smallgpt.train.oom import out_of_memory_advice
from smallgpt.train.trainer import Trainer

from tests.train_helpers import TINY, make_shards, single_thread

CUDA_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 7.79 GiB\n"
    "Of the allocated memory 5.10 GiB is allocated by PyTorch"
)


def suggested(advice: str) -> tuple[int, int]:
    match = re.search(r"train\.batch_size=(\d+) train\.grad_accum_steps=(\d+)", advice)
    assert match, advice
    return int(match.group(1)), int(match.group(2))


@pytest.mark.parametrize("batch_size, accum", [(16, 1), (16, 2), (6, 3), (7, 1), (2, 5), (12, 4)])
def test_advice_halves_the_micro_batch_or_more_and_keeps_the_sequences_per_step(batch_size, accum):
    error = torch.OutOfMemoryError(CUDA_MESSAGE)
    advice = out_of_memory_advice(
        error, batch_size=batch_size, grad_accum_steps=accum, seq_len=1024
    )
    smaller, more = suggested(advice)
    assert smaller * more == batch_size * accum  # the same gradient per optimizer step
    assert 1 <= smaller <= batch_size // 2
    assert f"train.batch_size={batch_size} " in advice and "1024 tokens" in advice
    assert advice.endswith(
        "(CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 7.79 GiB)"
    )


def test_advice_for_a_micro_batch_of_one_points_at_sequence_length_and_model_size():
    advice = out_of_memory_advice(
        torch.OutOfMemoryError(CUDA_MESSAGE),
        batch_size=1,
        grad_accum_steps=8,
        seq_len=2048,
        precision="fp32",
    )
    assert "data.seq_len" in advice and "model.embed_dim" in advice
    assert "train.precision=bf16" in advice
    assert "train.grad_accum_steps=" not in advice.split("\n", 1)[1]


def test_the_train_cli_turns_an_out_of_memory_error_into_the_advice(tmp_path, capsys, monkeypatch):
    shards = make_shards(tmp_path)

    def out_of_memory(self):
        raise torch.OutOfMemoryError(CUDA_MESSAGE)

    monkeypatch.setattr(Trainer, "train_step", out_of_memory)
    argv = [
        "demo-cpu",
        *TINY,
        "data.text_files=[]",
        f"data.shard_dir={shards}",
        "train.batch_size=4",
        "train.grad_accum_steps=3",
        "--run-dir",
        str(tmp_path / "run"),
    ]
    with single_thread():
        code = main(argv)
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: out of GPU memory")
    assert suggested(err) == (2, 6)
    assert "Tried to allocate 2.00 GiB" in err and "Traceback" not in err
