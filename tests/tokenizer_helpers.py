"""Trained tokenizers and their tiktoken twins, shared by the tokenizer tests."""

from __future__ import annotations

import functools

from smallgpt.tokenizer.bpe import Tokenizer

from tests.corpora import corpus_path

# name -> (corpus, vocab_size, pattern)
TOKENIZERS = {
    "shakespeare_gpt2": ("tinyshakespeare", 2000, "gpt2"),
    "multilingual_cl100k": ("multilingual_emoji", 3000, "cl100k"),
    "multilingual_gpt2": ("multilingual_emoji", 1500, "gpt2"),
}
# The split patterns as published with GPT-2 and tiktoken's cl100k_base.
PATTERNS = {
    "gpt2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    "cl100k": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}
# tiktoken needs a regex: one piece per text for the "none" pattern.
WHOLE_TEXT_REGEX = r"[\s\S]+"


def corpus_text(name: str, max_bytes: int | None = None, offset: int = 0) -> str:
    """Up to `max_bytes` of a corpus from byte `offset`, without the characters cut in two."""
    with open(corpus_path(name), "rb") as f:
        f.seek(offset)
        data = f.read(-1 if max_bytes is None else max_bytes)
    return data.decode("utf-8", errors="ignore" if offset or max_bytes else "strict")


@functools.cache
def trained(name: str) -> Tokenizer:
    """A tokenizer trained on a whole corpus (see TOKENIZERS)."""
    corpus, vocab_size, pattern = TOKENIZERS[name]
    return Tokenizer.train([corpus_text(corpus)], vocab_size=vocab_size, pattern=pattern)


@functools.cache
def _tiktoken_for(tokenizer_json: str):
    import tiktoken

    tokenizer = Tokenizer.from_json(tokenizer_json)
    specials = tokenizer.special_tokens
    regular = tokenizer.vocab_size - len(specials)
    ranks = {tokenizer.id_to_bytes(i): i for i in range(regular)}
    return tiktoken.Encoding(
        "smallgpt-test",
        pat_str=tokenizer.pattern or WHOLE_TEXT_REGEX,
        mergeable_ranks=ranks,
        special_tokens=specials,
    )


def tiktoken_twin(tokenizer: Tokenizer):
    """A `tiktoken.Encoding` with the tokenizer's ranks (its ids), pattern and special tokens."""
    return _tiktoken_for(tokenizer.to_json())
