"""A tiny tokenizer, model and checkpoint shared by the evaluation, generation and reliability
tests (untrained weights are enough: every check compares against an independent computation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from smallgpt.checkpoint.store import write_checkpoint
from smallgpt.config.loader import PACKAGE_DIR
from smallgpt.model.gpt import SmallGPT
from smallgpt.tokenizer.bpe import Tokenizer

from tests.train_helpers import single_thread

SHAKESPEARE = PACKAGE_DIR / "assets" / "tinyshakespeare.txt"


def shakespeare(num_chars: int, start: int = 0) -> str:
    """`num_chars` characters of the bundled Tiny Shakespeare from `start`."""
    return SHAKESPEARE.read_text(encoding="utf-8")[start : start + num_chars]


def tiny_tokenizer(vocab_size: int = 300, num_chars: int = 20_000) -> Tokenizer:
    return Tokenizer.train([shakespeare(num_chars)], vocab_size=vocab_size)


def tiny_model(tokenizer: Tokenizer, *, max_seq_len: int = 16, seed: int = 0, pad: bool = True):
    """A 2-layer, 32-wide SmallGPT over the tokenizer's vocabulary, in eval mode."""
    torch.manual_seed(seed)
    model = SmallGPT(
        tokenizer.vocab_size,
        embed_dim=32,
        num_heads=2,
        num_layers=2,
        max_seq_len=max_seq_len,
        dropout=0.0,
        pad_token_id=tokenizer.pad_token_id if pad else None,
    )
    return model.eval()


def tiny_checkpoint(path: Path, tokenizer: Tokenizer | None, model: SmallGPT) -> Path:
    """Write `model` (and `tokenizer`, if given) as a checkpoint directory at `path`."""
    return write_checkpoint(path, model, tokenizer=tokenizer, state={"step": 1})


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread (see `single_thread`): on the shared 2-core machine, two intra-op
    threads make the tiny forwards of these tests about a hundred times slower."""
    with single_thread():
        yield
