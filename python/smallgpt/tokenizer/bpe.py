"""The typed layer over `smallgpt._bpe`: training, encoding, decoding, saving and exporting a byte-level BPE."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from contextlib import closing
from typing import Any, Literal

import numpy as np

from smallgpt import _bpe
from smallgpt.corpus.chunks import read_chunks
from smallgpt.corpus.sources import Source, pretoken_cut, resolve_sources
from smallgpt.tokenizer.progress import file_progress_bar
from smallgpt.tokenizer.streaming import StreamDecoder

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = (EOS_TOKEN, PAD_TOKEN)

PathLike = str | os.PathLike[str]

# `Tokenizer.train` hands texts to Rust in batches of about this many characters.
_TRAIN_BATCH_CHARS = 8 << 20


def _check_text(text: object, what: str = "text") -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    return text


def _check_threads(num_threads: int | None) -> int | None:
    if num_threads is not None and (
        isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
    ):
        raise ValueError(f"num_threads must be a positive int or None, not {num_threads!r}")
    return num_threads


def _as_id_list(ids: object) -> list[int] | tuple[int, ...]:
    """Token ids as a list or tuple (from any sequence or iterable, numpy or torch array)."""
    if isinstance(ids, (list, tuple)):
        return ids
    if isinstance(ids, (str, bytes, int)):
        raise TypeError(f"ids must be a sequence of ints, not {type(ids).__name__}")
    if hasattr(ids, "tolist"):
        return ids.tolist()
    try:
        return list(ids)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"ids must be a sequence of ints, not {type(ids).__name__}") from None


def _piece_counter(
    vocab_size: int,
    special_tokens: Sequence[str],
    pattern: str,
    min_frequency: int,
    num_threads: int | None,
) -> _bpe.PieceCounter:
    """Check the training settings (before any counting) and start a piece counter."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(f"vocab_size must be an int, not {type(vocab_size).__name__}")
    if isinstance(special_tokens, str):
        raise TypeError("special_tokens must be a sequence of str, not a single str")
    special_tokens = list(special_tokens)
    for i, token in enumerate(special_tokens):
        _check_text(token, f"special_tokens[{i}]")
    minimum = 256 + len(special_tokens)
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: it must be at least 256 (the byte tokens) "
            f"+ {len(special_tokens)} special tokens = {minimum}"
        )
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 0:
        raise ValueError(f"min_frequency must be an int >= 0, not {min_frequency!r}")
    return _bpe.PieceCounter(pattern, _check_threads(num_threads))


def _too_large(ids: Sequence[int]) -> ValueError:
    """The error for ids too large for the Rust side to even read."""
    bad = next((i for i in ids if isinstance(i, int) and not -(1 << 63) <= i < 1 << 63), None)
    return ValueError(f"unknown token id {bad}")


class Tokenizer:
    """A trained byte-level BPE tokenizer.

    Build one with `Tokenizer.train`, `Tokenizer.train_files` or `Tokenizer.load`.
    """

    def __init__(self, core: _bpe.BpeCore) -> None:
        """Wrap a Rust `BpeCore`; use the `train*`/`load` constructors instead."""
        if not isinstance(core, _bpe.BpeCore):
            raise TypeError(
                "Tokenizer() wraps a trained core; use Tokenizer.train, Tokenizer.train_files "
                "or Tokenizer.load"
            )
        self._core = core
        self._specials: dict[str, int] = dict(core.special_tokens)

    # Training (helper TRAIN) --------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 10000,
        *,
        special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
        pattern: str = "gpt2",
        min_frequency: int = 2,
        num_threads: int | None = None,
    ) -> Tokenizer:
        """Learn a byte-level BPE vocabulary of `vocab_size` ids from `texts`.

        Each text is pre-tokenized on its own with `pattern` ("gpt2", "cl100k" or "none"), and
        merges are learned exactly as Hugging Face `tokenizers`' `BpeTrainer` learns them with
        a `ByteLevel` pre-tokenizer, `initial_alphabet=ByteLevel.alphabet()`, the same special
        tokens and `min_frequency`: the pair with the highest count is merged first; among
        equal counts the smallest pair of HF ids wins, where HF numbers the byte symbols by
        the code point of their byte-level character (printable bytes `!`..`~`, `¡`..`¬`,
        `®`..`ÿ` first, in byte order, then the other 68 bytes in byte order) and learned
        tokens after them, oldest first. `vocab_size` counts the 256 bytes, the learned tokens
        and the special tokens (which get the last ids). Training stops early, with a warning,
        when no pair occurs at least `min_frequency` times.

        `texts` may be any iterable of str (it is consumed in batches, so a generator keeps
        memory bounded). Counting runs on `num_threads` threads (None: all cores) without the
        GIL; the result does not depend on the thread count.

        Raises TypeError for a non-str text, ValueError for a `vocab_size` below 256 + the
        number of special tokens, invalid special tokens, an unknown pattern or an empty
        corpus.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be an iterable of str, not a single text: pass [text]")
        counter = _piece_counter(vocab_size, special_tokens, pattern, min_frequency, num_threads)
        batch: list[str] = []
        batch_chars = 0
        for i, text in enumerate(texts):
            batch.append(_check_text(text, f"texts[{i}]"))
            batch_chars += len(text)
            if batch_chars >= _TRAIN_BATCH_CHARS:
                counter.add_texts(batch)
                batch, batch_chars = [], 0
        if batch:
            counter.add_texts(batch)
        return cls._learn(counter, vocab_size, special_tokens, min_frequency)

    @classmethod
    def train_files(
        cls,
        paths: PathLike | Source | Iterable[PathLike | Source],
        vocab_size: int = 10000,
        *,
        special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
        pattern: str = "gpt2",
        min_frequency: int = 2,
        num_threads: int | None = None,
        text_field: str = "text",
        skip_bad_records: bool = False,
    ) -> Tokenizer:
        """Like `train` on the documents of a corpus, streamed in bounded memory.

        `paths` are what smallgpt.corpus reads: text files (one document each), JSONL and
        Parquet files (a document per record, its `text_field`), any of them as .gz/.zst/.bz2,
        directories and glob patterns, `hf:NAME[:SPLIT]`. Plain text files are streamed by
        Rust, the others are read on a background thread in chunks cut where pre-tokenization
        allows, so memory stays bounded (a few chunks of about 8 MB of text plus the counts)
        whatever the corpus size; the merges are those of `train` on the whole documents.
        Raises like `train`, plus FileNotFoundError naming a missing file, and
        smallgpt.corpus.CorpusError (a ValueError) naming the file and the line, row or byte
        offset of bad input (`skip_bad_records` skips bad records instead).
        """
        if isinstance(paths, (str, os.PathLike, Source)):
            paths = [paths]
        paths = list(paths)
        for i, path in enumerate(paths):
            if not isinstance(path, (str, os.PathLike, Source)):
                raise TypeError(
                    f"paths[{i}] must be a str or os.PathLike, not {type(path).__name__}"
                )
        sources = resolve_sources(paths) if paths else []  # none: train's empty-corpus error
        counter = _piece_counter(vocab_size, special_tokens, pattern, min_frequency, num_threads)
        streamed = []
        for source in sources:
            if source.format == "text" and source.compression is None:
                counter.add_file(os.fspath(source.name))
            else:
                streamed.append(source)
        if streamed:
            chunks = read_chunks(
                streamed,
                chunk_chars=_TRAIN_BATCH_CHARS,
                cut=pretoken_cut(pattern),
                text_field=text_field,
                skip_bad_records=skip_bad_records,
            )
            with closing(chunks):  # stops the reader thread even when counting fails
                for chunk in chunks:
                    counter.add_texts(chunk.texts())
        return cls._learn(counter, vocab_size, special_tokens, min_frequency)

    @classmethod
    def _learn(
        cls,
        counter: _bpe.PieceCounter,
        vocab_size: int,
        special_tokens: Sequence[str],
        min_frequency: int,
    ) -> Tokenizer:
        tokenizer = cls(counter.train(vocab_size, list(special_tokens), min_frequency))
        if tokenizer.vocab_size < vocab_size:
            warnings.warn(
                f"the trained vocabulary has {tokenizer.vocab_size} ids, fewer than the "
                f"requested vocab_size={vocab_size}: no pair of tokens is left that occurs at "
                f"least min_frequency={min_frequency} times in this corpus",
                stacklevel=3,
            )
        return tokenizer

    # Properties ---------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids: the 256 bytes, the learned tokens and the special tokens."""
        return self._core.vocab_size

    def get_vocab_size(self) -> int:
        """Same as `vocab_size` (Hugging Face style)."""
        return self._core.vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token strings and their ids (a copy)."""
        return dict(self._specials)

    @property
    def eos_token_id(self) -> int | None:
        """Id of `<|endoftext|>`, or None when the tokenizer has no such special token."""
        return self._specials.get(EOS_TOKEN)

    @property
    def pad_token_id(self) -> int | None:
        """Id of `<|pad|>`, or None when the tokenizer has no such special token."""
        return self._specials.get(PAD_TOKEN)

    @property
    def pattern(self) -> str:
        """The pre-tokenization regex the text is split with ("" when it is not split)."""
        return self._core.pattern

    @property
    def pattern_name(self) -> str:
        """Name of the pre-tokenization pattern: "gpt2", "cl100k" or "none"."""
        return self._core.pattern_name

    # Encoding -----------------------------------------------------------------------------

    def _allowed_ids(self, allowed_special: Literal["all"] | Iterable[str]) -> list[int]:
        if allowed_special == "all":
            return list(self._specials.values())
        if isinstance(allowed_special, str):
            raise TypeError(
                'allowed_special must be "all" or a collection of special token strings, '
                f"not the string {allowed_special!r}"
            )
        ids = []
        for token in allowed_special:
            if token not in self._specials:
                known = ", ".join(self._specials) or "none"
                raise ValueError(f"{token!r} is not a special token of this tokenizer ({known})")
            ids.append(self._specials[token])
        return ids

    def _prefix(self, add_special_tokens: bool) -> list[int]:
        if not add_special_tokens:
            return []
        if self.eos_token_id is None:
            raise ValueError(f"add_special_tokens=True needs a {EOS_TOKEN} special token")
        return [self.eos_token_id]

    def encode(
        self,
        text: str,
        *,
        add_special_tokens: bool = False,
        allowed_special: Literal["all"] | Iterable[str] = (),
    ) -> list[int]:
        """Token ids of `text`.

        Special token strings in the text are ordinary text unless listed in `allowed_special`
        ("all" allows every special token); allowed ones become their ids. With
        `add_special_tokens=True` the ids start with `<|endoftext|>`. Texts of several MB
        without allowed special tokens are encoded on all cores (same ids).
        Raises TypeError for a non-str text, ValueError for an unknown special token.
        """
        ids = self._core.encode(_check_text(text), self._allowed_ids(allowed_special))
        prefix = self._prefix(add_special_tokens)
        return prefix + ids if prefix else ids

    def encode_batch(
        self,
        texts: Iterable[str],
        num_threads: int | None = None,
        *,
        add_special_tokens: bool = False,
        allowed_special: Literal["all"] | Iterable[str] = (),
    ) -> list[list[int]]:
        """`encode` of each text, in parallel on `num_threads` threads (None: all cores).

        A text much larger than its share of the batch (and holding none of the allowed special
        tokens) is encoded in parts on several threads, so a few large texts use every core;
        the ids are those of `encode`.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a collection of str, not a single str")
        texts = texts if isinstance(texts, list) else list(texts)
        allowed, threads = self._allowed_ids(allowed_special), _check_threads(num_threads)
        try:
            batch = self._core.encode_batch(texts, allowed, threads)
        except TypeError:
            # Checked only on failure: a Python loop over every text would cost a tenth of
            # the call. Name the first text that is not a str.
            for i, text in enumerate(texts):
                _check_text(text, f"texts[{i}]")
            raise
        if not add_special_tokens:
            return batch
        prefix = self._prefix(add_special_tokens)
        return [prefix + ids for ids in batch]

    def encode_to_numpy(self, text: str, num_threads: int | None = None) -> np.ndarray:
        """Ids of `text` (special strings as plain text) as a 1-D numpy array: uint16 when
        `vocab_size <= 65536`, else uint32. Long texts are encoded in parallel."""
        return self._core.encode_to_numpy(_check_text(text), _check_threads(num_threads))

    def encode_batch_to_numpy(
        self, texts: Sequence[str | _bpe.TextBatch], num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ids of all `texts` (special strings as plain text) one after the other, as one
        array (dtype `token_dtype`), and an int64 array of offsets, one per text and the total:
        text i's ids are `ids[offsets[i]:offsets[i + 1]]`, those of `encode_to_numpy(text)`.

        A `TextBatch` among `texts` (the records `smallgpt.corpus` reads, held in Rust) stands
        for its texts, each with its own offset, so there are then more offsets than items.
        One call encodes everything on `num_threads` threads (None: all cores) without the
        GIL; a large text is split across threads. Raises TypeError naming the first item that
        is neither a str nor a TextBatch.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a collection of str, not a single str")
        return self._core.encode_texts_to_numpy(texts, _check_threads(num_threads))

    def encode_file_to_numpy(
        self, path: PathLike, num_threads: int | None = None, *, progress: bool = False
    ) -> np.ndarray:
        """Ids of a UTF-8 text file as `encode_to_numpy` would give for its whole text.

        The file is streamed in chunks cut where pre-tokenization allows and encoded in
        parallel, so memory is the output array plus a bounded buffer (up to 32 MB of text;
        more only while a stretch without any safe cut, such as a long run without spaces, is
        read; with pattern "none" the whole file is one piece). `progress=True` shows a tqdm
        bar. Raises FileNotFoundError for a missing file,
        ValueError for a file that is not UTF-8.
        """
        path = os.fspath(path)
        with file_progress_bar(path, progress) as update:
            return self._core.encode_file_to_numpy(path, _check_threads(num_threads), update)

    def encode_file_to_bin(
        self,
        path: PathLike,
        out: PathLike,
        num_threads: int | None = None,
        *,
        progress: bool = False,
    ) -> int:
        """Append the ids of a UTF-8 text file to the raw token file `out` (little-endian
        uint16 when `vocab_size <= 65536`, else uint32, as `np.memmap` reads it), streaming
        in bounded memory. Returns the number of ids written. Raises like
        `encode_file_to_numpy`."""
        path = os.fspath(path)
        with file_progress_bar(path, progress) as update:
            return self._core.encode_file_to_bin(
                path, os.fspath(out), _check_threads(num_threads), update
            )

    @property
    def token_dtype(self) -> np.dtype:
        """The numpy dtype of encoded arrays: uint16 when the ids fit, else uint32."""
        return np.dtype(np.uint16 if self.vocab_size <= 1 << 16 else np.uint32)

    # Decoding -----------------------------------------------------------------------------

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        """The bytes the ids stand for (special tokens give their strings).

        Raises TypeError for non-int ids, ValueError naming an id outside the vocabulary.
        """
        ids = _as_id_list(ids)
        try:
            return self._core.decode_bytes(ids)
        except OverflowError:
            raise _too_large(ids) from None

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of `ids`; bytes that are not valid UTF-8 become U+FFFD. Raises like
        `decode_bytes`."""
        ids = _as_id_list(ids)
        try:
            return self._core.decode(ids)
        except OverflowError:
            raise _too_large(ids) from None

    def id_to_bytes(self, token_id: int) -> bytes:
        """The bytes of one id (a special token's are its string's). Raises ValueError for an
        id outside the vocabulary."""
        if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)):
            raise TypeError(f"token_id must be an int, not {type(token_id).__name__}")
        try:
            return self._core.id_to_bytes(int(token_id))
        except OverflowError:
            raise _too_large([int(token_id)]) from None

    def token_byte_lengths(self, size: int | None = None) -> np.ndarray:
        """Bytes of text each id stands for, as an int64 array indexed by id (for bits per byte).

        Special tokens stand for no text (0). `size` (>= vocab_size) pads the array with zeros up
        to `size` ids, for a model whose vocab_size is larger than the tokenizer's. Raises
        ValueError when `size` is smaller than vocab_size.
        """
        size = self.vocab_size if size is None else size
        if size < self.vocab_size:
            raise ValueError(
                f"size ({size}) is smaller than the vocabulary ({self.vocab_size} ids)"
            )
        specials = set(self._specials.values())
        lengths = np.zeros(size, dtype=np.int64)
        lengths[: self.vocab_size] = [
            0 if i in specials else len(self._core.id_to_bytes(i)) for i in range(self.vocab_size)
        ]
        return lengths

    def stream_decoder(self) -> StreamDecoder:
        """A `StreamDecoder` for this tokenizer."""
        return StreamDecoder(self)

    # Serialization ------------------------------------------------------------------------

    def to_json(self) -> str:
        """The tokenizer in smallgpt's versioned JSON format (what `save` writes)."""
        return self._core.to_json()

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        """A tokenizer from `to_json`'s text. Raises ValueError saying what is wrong."""
        return cls(_bpe.BpeCore.from_json(_check_text(text, "the tokenizer JSON")))

    def save(self, path: PathLike) -> None:
        """Write the tokenizer to `path` in smallgpt's versioned JSON format (format
        "smallgpt-bpe", version 1: pattern name, special tokens, and the merges as pairs of
        hex byte strings, so the file stands alone)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path: PathLike) -> Tokenizer:
        """Read a tokenizer written by `save`. Raises FileNotFoundError for a missing file and
        ValueError naming the problem for anything else (not JSON, another format such as a
        Hugging Face tokenizer.json, an unsupported version, a corrupt merge list)."""
        with open(path, "rb") as f:
            data = f.read()
        try:
            return cls(_bpe.BpeCore.from_json(data.decode("utf-8")))
        except UnicodeDecodeError as e:
            raise ValueError(f"{os.fspath(path)}: not a smallgpt tokenizer file ({e})") from None
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)}: {e}") from None

    def export_tiktoken(self, path: PathLike) -> None:
        r"""Write the regular tokens as a tiktoken rank file (`base64(bytes) id` per line).

        Load it with `tiktoken.Encoding(name, pat_str=tok.pattern,
        mergeable_ranks=tiktoken.load.load_tiktoken_bpe(path),
        special_tokens=tok.special_tokens)`; that encoding gives the same ids as this
        tokenizer (the "none" pattern has no regex: use `pat_str=r"[\s\S]+"`).
        """
        with open(path, "w", encoding="utf-8") as f:
            f.write(self._core.tiktoken_ranks())

    def export_hf(self, path: PathLike) -> None:
        """Write a Hugging Face `tokenizer.json` (BPE model, byte-level vocabulary, merges,
        special tokens as added tokens, the pattern's pre-tokenizer, ByteLevel decoder) that
        `tokenizers.Tokenizer.from_file` loads; it encodes text to the same ids as this
        tokenizer (HF always treats special token strings in the text as special tokens)."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self._core.hf_tokenizer_json())

    def __getstate__(self) -> dict[str, Any]:
        return {"json": self.to_json()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(_bpe.BpeCore.from_json(state["json"]))  # type: ignore[misc]

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, pattern={self.pattern_name!r}, "
            f"special_tokens={list(self._specials)})"
        )
