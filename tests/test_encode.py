"""Encoding equals tiktoken's for the same ranks, pattern and special tokens, on every corpus,
on generated text and on pathological inputs, through every encoding entry point."""

from __future__ import annotations

import concurrent.futures
import gc
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smallgpt.tokenizer.bpe import Tokenizer

from tests.corpora import CORPORA, corpus_path
from tests.tokenizer_helpers import TOKENIZERS, corpus_text, tiktoken_twin, trained

pytest.importorskip("tiktoken")

CORPUS_SLICE = 2_000_000  # bytes of each corpus compared with tiktoken (the big one: from 20 MB)

# Characters the tiktoken twin's regex engine and Python's `regex` (whose tables we follow)
# classify alike: all assigned code points of this Python's Unicode database (Cn excluded), so
# the comparison does not depend on the two engines' Unicode versions.
assigned_text = st.text(alphabet=st.characters(exclude_categories=("Cs", "Cn")), max_size=80)
tricky_text = st.text(
    alphabet=st.sampled_from(
        " \t\n\r\x0b\x0c\x85\xa0\u3000'sStTlLdDmMreREvV\u017faZé中Я٣½09.,!?😀👍🏽\u0301"
        "thequickbrownfoxjumps"
    ),
    max_size=80,
)
generated_text = st.lists(st.one_of(assigned_text, tricky_text), max_size=4).map("".join)


@pytest.fixture(params=sorted(TOKENIZERS))
def tokenizer(request, shared_data) -> Tokenizer:
    return trained(request.param)


@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_encode_equals_tiktoken_on_corpus(tokenizer, corpus):
    offset = 20_000_000 if corpus == "gutenberg" else 0
    text = corpus_text(corpus, CORPUS_SLICE, offset)
    assert tokenizer.encode(text) == tiktoken_twin(tokenizer).encode_ordinary(text)


@settings(max_examples=300, deadline=None)
@given(text=generated_text)
def test_encode_equals_tiktoken_on_generated_text(shared_data, text):
    for name in TOKENIZERS:
        tokenizer = trained(name)
        assert tokenizer.encode(text) == tiktoken_twin(tokenizer).encode_ordinary(text)


def _long_pieces() -> dict[str, str]:
    rng = random.Random(0)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    return {
        "repeated_letter": "e" * 5000,
        "repeated_pair": "th" * 3000,
        "random_letters": "".join(rng.choice(letters) for _ in range(6000)),
        "digits": "".join(rng.choice("0123456789") for _ in range(6000)),
        "emoji": "😀👍🏽🇫🇷" * 400,
        "punctuation": "".join(rng.choice(".,;:!?-'\"()") for _ in range(5000)),
        "spaces": " " * 5000 + "x",
    }


@pytest.mark.parametrize("kind", sorted(_long_pieces()))
def test_long_pieces_merge_like_tiktoken(tokenizer, kind):
    # Pieces this long take the heap merge path, not the short-piece loop.
    text = _long_pieces()[kind]
    assert tokenizer.encode(text) == tiktoken_twin(tokenizer).encode_ordinary(text)


@pytest.mark.parametrize(
    "text",
    [
        " " * 1_000_000,
        "\n" * 1_000_000,
        "x" * 1_000_000,
        "".join(random.Random(1).choice("abcdefghij") for _ in range(1_000_000)),
        "😀" * 100_000,
        "9" * 1_000_000,
    ],
    ids=["spaces", "newlines", "one_letter", "letters", "emoji", "digits"],
)
def test_pathological_text_encodes_and_round_trips(text):
    tokenizer = trained("shakespeare_gpt2")
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert len(ids) <= len(text.encode("utf-8"))


def test_whole_text_pattern_equals_tiktoken_with_one_piece(shared_data):
    text = corpus_text("tinyshakespeare", 20_000)
    tokenizer = Tokenizer.train([text], vocab_size=600, pattern="none")
    sample = corpus_text("tinyshakespeare", 3_000, offset=500_000)
    assert tokenizer.encode(sample) == tiktoken_twin(tokenizer).encode_ordinary(sample)


SPECIAL_TEXT = (
    "<|endoftext|>Hello<|pad|> world<|endoftext|><|endoftext|>x<|endoftext|> <|pad|>\n<|endoftext|>"
)


@pytest.mark.parametrize(
    "allowed", ["all", (), ("<|endoftext|>",), ("<|pad|>",)], ids=["all", "none", "eos", "pad"]
)
def test_allowed_special_tokens_match_tiktoken(tokenizer, allowed):
    twin = tiktoken_twin(tokenizer)
    twin_allowed = allowed if allowed == "all" else set(allowed)
    expected = twin.encode(SPECIAL_TEXT, allowed_special=twin_allowed, disallowed_special=())
    assert tokenizer.encode(SPECIAL_TEXT, allowed_special=allowed) == expected


def test_special_strings_are_text_by_default(tokenizer):
    ids = tokenizer.encode(SPECIAL_TEXT)
    assert not set(ids) & set(tokenizer.special_tokens.values())
    assert ids == tiktoken_twin(tokenizer).encode_ordinary(SPECIAL_TEXT)


def test_add_special_tokens_prepends_end_of_text(tokenizer):
    text = "To be, or not to be"
    ids = tokenizer.encode(text, add_special_tokens=True)
    assert ids == [tokenizer.special_tokens["<|endoftext|>"]] + tokenizer.encode(text)


def test_encode_batch_equals_encode_on_any_thread_count(tokenizer):
    lines = corpus_text("multilingual_emoji", 200_000).splitlines(keepends=True)
    expected = tiktoken_twin(tokenizer).encode_ordinary_batch(lines)
    assert tokenizer.encode_batch(lines, num_threads=1) == expected
    assert tokenizer.encode_batch(lines, num_threads=2) == expected
    assert tokenizer.encode_batch(lines) == expected
    # More threads than cores, and many runs arriving out of order on the calling thread.
    assert tokenizer.encode_batch(lines, num_threads=5) == expected


def _runs_everywhere(size: int) -> str:
    """About `size` bytes in which almost every byte lies inside a long letter run (with
    multibyte letters), whitespace run or emoji run: wherever a part of it is meant to end,
    the cut has to move to a safe place."""
    rng = random.Random(size)
    runs = [
        "naïveté中" * 40,
        " \t\u3000 " * 50 + "\n",
        "😀👍🏽🇫🇷" * 30,
        " 1234567" * 20,
        "'ll'S" * 30,
    ]
    text: list[str] = []
    while sum(map(len, text)) * 2 < size:
        text.append(rng.choice(runs))
    return "".join(text)


def test_encode_batch_of_few_large_texts_equals_tiktoken(tokenizer):
    # Texts this large are cut into parts encoded on several threads, then joined back.
    texts = [
        corpus_text("multilingual_emoji"),
        _runs_everywhere(400_000),
        corpus_text("gutenberg", 1_000_000, 30_000_000),
        "tiny",
        corpus_text("tinyshakespeare"),
    ]
    expected = tiktoken_twin(tokenizer).encode_ordinary_batch(texts)
    for threads in (1, 2, 5):
        assert tokenizer.encode_batch(texts, num_threads=threads) == expected, threads


def test_encode_batch_with_allowed_specials_equals_encode(tokenizer):
    texts = [f"line {i} <|endoftext|> é😀 {i * 7}" for i in range(3000)]
    expected = [tokenizer.encode(t, allowed_special="all") for t in texts]
    assert expected[0] != tokenizer.encode(texts[0])  # the special is a token here
    assert tokenizer.encode_batch(texts, allowed_special="all", num_threads=3) == expected
    assert tokenizer.encode_batch([], num_threads=2) == []


def test_encode_batch_leaves_the_garbage_collector_as_it_found_it(tokenizer):
    # Lists are built with the cyclic collector paused; it must come back on (and stay off
    # when the caller had turned it off).
    texts = ["some text"] * 5000
    assert gc.isenabled()
    tokenizer.encode_batch(texts, num_threads=2)
    assert gc.isenabled()
    gc.disable()
    try:
        tokenizer.encode_batch(texts, num_threads=2)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_encode_to_numpy_equals_tiktoken_in_parallel(tokenizer):
    text = corpus_text("gutenberg_10mb", 4_000_000)
    expected = tiktoken_twin(tokenizer).encode_ordinary(text)
    for threads in (1, 2):
        ids = tokenizer.encode_to_numpy(text, num_threads=threads)
        assert ids.dtype == np.uint16
        assert ids.tolist() == expected


def test_encode_batch_to_numpy_gives_each_texts_tiktoken_ids_one_after_the_other(tokenizer):
    big = corpus_text("gutenberg_10mb", 2_500_000)  # over 2 MB: cut across the threads
    world = corpus_text("multilingual_emoji")
    texts = [world[:3000], "", big, " <|endoftext|> as text", world[3000:9000]]
    twin = tiktoken_twin(tokenizer)
    for threads in (1, 2):
        ids, offsets = tokenizer.encode_batch_to_numpy(texts, num_threads=threads)
        assert ids.dtype == tokenizer.token_dtype and offsets.dtype == np.int64
        assert offsets.tolist()[0] == 0 and offsets.tolist()[-1] == len(ids)
        for i, text in enumerate(texts):
            assert ids[offsets[i] : offsets[i + 1]].tolist() == twin.encode_ordinary(text), i
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        tokenizer.encode_batch_to_numpy(["a", 3])


@pytest.mark.parametrize("corpus", ["tinyshakespeare", "wikitext2_test", "multilingual_emoji"])
def test_encode_file_to_numpy_equals_tiktoken(tokenizer, corpus):
    path = corpus_path(corpus)
    expected = tiktoken_twin(tokenizer).encode_ordinary(path.read_text(encoding="utf-8"))
    for threads in (1, 2):
        ids = tokenizer.encode_file_to_numpy(path, num_threads=threads)
        assert ids.dtype == np.uint16
        assert ids.tolist() == expected


@pytest.mark.slow
def test_encode_file_to_numpy_streams_the_large_corpus_like_tiktoken(shared_data):
    tokenizer = trained("shakespeare_gpt2")
    path = corpus_path("gutenberg")
    ids = tokenizer.encode_file_to_numpy(path, num_threads=2)
    expected = tiktoken_twin(tokenizer).encode_ordinary(path.read_text(encoding="utf-8"))
    assert np.array_equal(ids, np.asarray(expected, dtype=np.uint16))


def test_encode_file_to_bin_appends_the_file_ids(tmp_path, tokenizer):
    path = corpus_path("tinyshakespeare")
    out = tmp_path / "tokens.bin"
    first = tokenizer.encode_file_to_bin(path, out)
    second = tokenizer.encode_file_to_bin(path, out, num_threads=2)
    expected = tiktoken_twin(tokenizer).encode_ordinary(path.read_text(encoding="utf-8"))
    assert first == second == len(expected)
    assert np.fromfile(out, dtype="<u2").tolist() == expected + expected


def test_encode_file_reads_on_through_text_without_safe_cuts(tmp_path):
    # 5.6 MB without a safe cut, longer than one read batch: the streamer must read on.
    tokenizer = trained("shakespeare_gpt2")
    text = "word " * 200_000 + "abcdefgh" * 700_000 + " end\n" * 1000
    path = tmp_path / "nospace.txt"
    path.write_text(text, encoding="utf-8")
    ids = tokenizer.encode_file_to_numpy(path, num_threads=2)
    assert ids.tolist() == tokenizer.encode(text)


def _all_byte_pairs_json() -> str:
    """A valid vocabulary of 256 + 65536 regular tokens: every pair of bytes merged."""
    import json

    # Pairs starting with byte 0 come last, so "\x00\x7f" encodes to an id above 65535.
    pairs = [(a, b) for a in reversed(range(256)) for b in range(256)]
    merges = [(bytes([a]).hex(), bytes([b]).hex()) for a, b in pairs]
    return json.dumps(
        {
            "format": "smallgpt-bpe",
            "version": 1,
            "pattern": "gpt2",
            "specials": ["<|endoftext|>", "<|pad|>"],
            "merges": merges,
        }
    )


def test_vocabularies_over_65536_ids_give_uint32_arrays(tmp_path):
    tokenizer = Tokenizer.from_json(_all_byte_pairs_json())
    assert tokenizer.vocab_size == 256 + 65536 + 2
    text = "\x00\x7f Ünïcödé text, with ~ all sorts of bytes 😀"
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    expected = tiktoken_twin(tokenizer).encode_ordinary(text)
    for ids in (tokenizer.encode_to_numpy(text), tokenizer.encode_file_to_numpy(path)):
        assert ids.dtype == np.uint32
        assert ids.tolist() == expected
    assert max(expected) > 65535


def test_threads_share_one_tokenizer(tokenizer):
    texts = corpus_text("multilingual_emoji", 300_000).split("\n\n")
    expected = [tokenizer.encode(t) for t in texts]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(tokenizer.encode, texts)) == expected


@pytest.mark.parametrize("bad", [b"bytes", 12, None, ["a list"]])
def test_encode_rejects_non_str(bad):
    with pytest.raises(TypeError, match="must be a str"):
        trained("shakespeare_gpt2").encode(bad)


def test_encode_rejects_unknown_special_tokens():
    tokenizer = trained("shakespeare_gpt2")
    with pytest.raises(ValueError, match="'<|eot|>' is not a special token"):
        tokenizer.encode("x", allowed_special=["<|eot|>"])
    with pytest.raises(TypeError, match="allowed_special"):
        tokenizer.encode("x", allowed_special="<|pad|>")


def test_encode_batch_rejects_bad_input():
    tokenizer = trained("shakespeare_gpt2")
    with pytest.raises(TypeError, match="not a single str"):
        tokenizer.encode_batch("text")
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        tokenizer.encode_batch(["ok", 3])
    with pytest.raises(ValueError, match="num_threads"):
        tokenizer.encode_batch(["ok"], num_threads=0)


def test_encode_file_errors_name_the_file(tmp_path):
    tokenizer = trained("shakespeare_gpt2")
    missing = tmp_path / "missing.txt"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        tokenizer.encode_file_to_numpy(missing)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("plain ascii then caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text \(bad byte at offset 20\)"):
        tokenizer.encode_file_to_numpy(latin1)
