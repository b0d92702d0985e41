"""Byte-level BPE tokenizers: the typed layer over `smallgpt._bpe` and the guide's `SimpleTokenizer`; `python -m smallgpt.tokenizer`."""

from smallgpt.tokenizer.bpe import (
    DEFAULT_SPECIAL_TOKENS,
    EOS_TOKEN,
    PAD_TOKEN,
    PathLike,
    Tokenizer,
)
from smallgpt.tokenizer.simple import (
    SimpleTokenizer,
)
from smallgpt.tokenizer.streaming import StreamDecoder

__all__ = [
    "DEFAULT_SPECIAL_TOKENS",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "PathLike",
    "SimpleTokenizer",
    "StreamDecoder",
    "Tokenizer",
]
