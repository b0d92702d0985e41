"""Independent references for BPE training: Hugging Face `tokenizers`' BpeTrainer configured like
smallgpt's trainer, and a small pure-Python trainer with the same rule and tie-break."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Sequence

import regex
from smallgpt.tokenizer.bpe import Tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (as published with GPT-2's encoder)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


_UNICODE_TO_BYTE = {c: b for b, c in bytes_to_unicode().items()}


def byte_level_to_bytes(token: str) -> bytes:
    """The bytes a byte-level vocabulary string stands for."""
    return bytes(_UNICODE_TO_BYTE[c] for c in token)


def our_merges(tokenizer: Tokenizer) -> list[tuple[bytes, bytes]]:
    """The merges of a smallgpt tokenizer, read from its saved JSON (hex byte strings)."""
    data = json.loads(tokenizer.to_json())
    return [(bytes.fromhex(left), bytes.fromhex(right)) for left, right in data["merges"]]


def hf_merges(
    texts: Sequence[str],
    vocab_size: int,
    *,
    pattern: str,
    regex_string: str,
    min_frequency: int,
    special_tokens: Sequence[str],
) -> list[tuple[bytes, bytes]]:
    """Merges learned by HF's BpeTrainer with the byte-level setup smallgpt reproduces.

    `pattern` is "gpt2" (ByteLevel with its built-in GPT-2 regex), "cl100k" (a Split
    pre-tokenizer with `regex_string`, behavior "isolated", then ByteLevel without regex) or
    "none" (ByteLevel without regex).
    """
    from tokenizers import Regex, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HfTokenizer

    hf = HfTokenizer(models.BPE())
    if pattern == "gpt2":
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif pattern == "cl100k":
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(regex_string), "isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer)
    merges = json.loads(hf.to_str())["model"]["merges"]
    pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
    return [(byte_level_to_bytes(left), byte_level_to_bytes(right)) for left, right in pairs]


def reference_merges(
    texts: Sequence[str],
    vocab_size: int,
    *,
    regex_string: str,
    min_frequency: int,
    special_tokens: Sequence[str],
) -> list[tuple[bytes, bytes]]:
    """Textbook BPE, recounting every pair at each step, with HF's tie-break.

    Texts are split with Python's `regex` (the whole text is one piece when `regex_string` is
    empty). At each step the most frequent adjacent pair is merged everywhere, left to right;
    equal counts go to the smallest pair of HF ids: special tokens first, then the 256 bytes
    ordered by their byte-level character, then learned tokens in creation order. Stops at
    `vocab_size` ids (specials included), or when the best count is below
    `max(min_frequency, 1)`.
    """
    words: Counter[tuple[bytes, ...]] = Counter()
    for text in texts:
        pieces = regex.findall(regex_string, text) if regex_string else [text] if text else []
        for piece in pieces:
            words[tuple(bytes([b]) for b in piece.encode("utf-8"))] += 1
    table = bytes_to_unicode()
    order = sorted(range(256), key=lambda b: table[b])
    hf_id = {bytes([b]): len(special_tokens) + i for i, b in enumerate(order)}
    merges: list[tuple[bytes, bytes]] = []
    while len(special_tokens) + len(hf_id) < vocab_size:
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, n in words.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], hf_id[p[0]], hf_id[p[1]]))
        if pairs[best] < max(min_frequency, 1):
            break
        joined = best[0] + best[1]
        hf_id.setdefault(joined, len(special_tokens) + len(hf_id))
        merges.append(best)
        merged: Counter[tuple[bytes, ...]] = Counter()
        for word, n in words.items():
            out: list[bytes] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return merges
