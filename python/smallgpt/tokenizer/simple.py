"""`SimpleTokenizer`: the user's guide's tokenizer API on top of `Tokenizer`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from smallgpt.tokenizer.bpe import DEFAULT_SPECIAL_TOKENS, PathLike, Tokenizer


class SimpleTokenizer:
    """A minimal train/save/load/encode/decode facade over `Tokenizer` with the default
    settings (GPT-2 pattern, `<|endoftext|>` and `<|pad|>` special tokens)."""

    def __init__(self, vocab_size: int = 10000) -> None:
        """An untrained tokenizer that `train` will give `vocab_size` ids."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int, not {type(vocab_size).__name__}")
        minimum = 256 + len(DEFAULT_SPECIAL_TOKENS)
        if vocab_size < minimum:
            raise ValueError(f"vocab_size must be at least {minimum} (256 bytes + special tokens)")
        self.vocab_size = vocab_size
        self._tokenizer: Tokenizer | None = None

    @property
    def tokenizer(self) -> Tokenizer:
        """The trained `Tokenizer`; RuntimeError before `train` or `load`."""
        if self._tokenizer is None:
            raise RuntimeError("the tokenizer is not trained: call train(texts) or load(path)")
        return self._tokenizer

    def train(self, texts: Iterable[str]) -> SimpleTokenizer:
        """Learn the vocabulary from `texts`; returns self."""
        self._tokenizer = Tokenizer.train(texts, vocab_size=self.vocab_size)
        self.vocab_size = self._tokenizer.vocab_size
        return self

    def save(self, path: PathLike) -> None:
        """Write the tokenizer as smallgpt JSON, whatever the file's suffix."""
        self.tokenizer.save(path)

    @classmethod
    def load(cls, path: PathLike) -> SimpleTokenizer:
        """Load a tokenizer written by `save` (or `Tokenizer.save`)."""
        tokenizer = Tokenizer.load(path)
        simple = cls.__new__(cls)
        simple.vocab_size = tokenizer.vocab_size
        simple._tokenizer = tokenizer
        return simple

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`, starting with `<|endoftext|>` if `add_special_tokens`."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of `ids` (invalid UTF-8 as U+FFFD)."""
        return self.tokenizer.decode(ids)

    def get_vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return self.tokenizer.vocab_size if self._tokenizer is not None else self.vocab_size

    @property
    def eos_token_id(self) -> int | None:
        """Id of `<|endoftext|>`."""
        return self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int | None:
        """Id of `<|pad|>`."""
        return self.tokenizer.pad_token_id
