"""`StreamDecoder`: ids in one (or a few) at a time, text out only in whole UTF-8 characters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from smallgpt import _bpe


@runtime_checkable
class _ByteDecoder(Protocol):
    """What the stream needs of a tokenizer (`Tokenizer` has both; naming the protocol here
    instead of `Tokenizer` keeps this module below `bpe.py`, which returns StreamDecoders)."""

    def id_to_bytes(self, token_id: int) -> bytes: ...

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes: ...


class StreamDecoder:
    """Decodes ids one (or a few) at a time, releasing text only once its UTF-8 characters are
    complete: a character split over several tokens never shows up half-decoded.

    The concatenation of everything `push` and `finish` return equals
    `tokenizer.decode(all ids)`.
    """

    def __init__(self, tokenizer: _ByteDecoder) -> None:
        """Start an empty stream for `tokenizer` (a `Tokenizer`)."""
        if not isinstance(tokenizer, _ByteDecoder):
            raise TypeError(f"tokenizer must be a Tokenizer, not {type(tokenizer).__name__}")
        self._tokenizer = tokenizer
        self._stream = _bpe.Utf8Stream()

    def push(self, ids: int | Sequence[int] | np.ndarray) -> str:
        """Add one id or a sequence of ids; return the text they complete (possibly "")."""
        if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
            data = self._tokenizer.id_to_bytes(int(ids))
        else:
            data = self._tokenizer.decode_bytes(ids)
        return self._stream.push(data)

    def finish(self) -> str:
        """End the stream: an unfinished character comes out as U+FFFD. The decoder may then
        be reused for a new stream."""
        return self._stream.finish()

    @property
    def pending_bytes(self) -> bytes:
        """Bytes held back because their character is not complete yet."""
        return self._stream.pending
