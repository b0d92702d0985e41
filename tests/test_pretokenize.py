"""The Rust pre-tokenizer splits exactly like Python's `regex.findall` with the GPT-2 and cl100k
patterns, and its safe cuts never change the pieces."""

from __future__ import annotations

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st
from smallgpt import _bpe

from tests.corpora import CORPORA, corpus_path
from tests.tokenizer_helpers import PATTERNS

COMPILED = {name: regex.compile(pattern) for name, pattern in PATTERNS.items()}

# Characters where the patterns' alternatives meet: every kind of whitespace `regex` knows,
# apostrophes and contraction letters in both cases (and U+017F, which (?i) folds to 's'),
# letters of several scripts, combining marks, digits and other numerals, emoji, punctuation.
TRICKY = (
    " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2028\u2029\u202f\u3000"
    "''\u2019sStTrReEvVmMlLdDkK\u017f\u212a"
    "aZé\u00dfЯ中ع\u0915\u0301\u093f"
    "09\u0663\u2167\u00bd\u00b2"
    "\U0001f600\U0001f44d\U0001f3fd\u200d\U0001f1eb\U0001f1f7"
    '.,!?-_"()\u2014\u2010\u2027\u201c\u201d\u200f\u2030'
)
MAX_CORPUS_CHARS = 3_000_000  # Python `regex` is slow: a few MB of each corpus is plenty

tricky_text = st.text(alphabet=st.sampled_from(TRICKY), max_size=60)
any_text = st.text(max_size=60)  # every code point but surrogates (Rust str cannot hold those)
mixed_text = st.lists(st.one_of(tricky_text, any_text), max_size=4).map("".join)
# Texts long enough for the pre-tokenizer's 64-byte blocks: plain ASCII stretches (which take
# the block path) between tricky characters, so every rule meets a block's edges.
plain_text = st.text(alphabet=st.sampled_from("ab Z  \n\t09.,("), min_size=20, max_size=90)
long_text = st.lists(st.one_of(plain_text, tricky_text), min_size=3, max_size=12).map("".join)


def test_none_pattern_keeps_the_text_whole():
    assert _bpe.pretokenize("a b\n c", "none") == ["a b\n c"]
    assert _bpe.pretokenize("", "none") == []


@pytest.mark.parametrize("corpus", sorted(CORPORA))
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_pieces_equal_regex_findall_on_corpus(shared_data, corpus, pattern):
    path = corpus_path(corpus)
    with open(path, encoding="utf-8") as f:
        text = f.read(MAX_CORPUS_CHARS)
    assert _bpe.pretokenize(text, pattern) == COMPILED[pattern].findall(text)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@settings(max_examples=400, deadline=None)
@given(text=st.one_of(mixed_text, long_text))
def test_pieces_equal_regex_findall_on_generated_text(pattern, text):
    assert _bpe.pretokenize(text, pattern) == COMPILED[pattern].findall(text)


@pytest.mark.slow
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_every_code_point_is_classified_like_regex(pattern):
    # Each character next to letters, itself, spaces, digits, an apostrophe and a newline.
    chars = (chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    text = "".join(f"x{c}{c} {c}1'{c}\n" for c in chars)
    assert _bpe.pretokenize(text, pattern) == COMPILED[pattern].findall(text)


def test_case_insensitive_contractions_follow_regex():
    text = "it'S he'LL we'Re I'M you'vE it'ſ it'K x'D"
    assert _bpe.pretokenize(text, "cl100k") == COMPILED["cl100k"].findall(text)
    assert _bpe.pretokenize(text, "gpt2") == COMPILED["gpt2"].findall(text)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
@settings(max_examples=300, deadline=None)
@given(text=mixed_text, after=mixed_text)
def test_safe_cut_keeps_the_pieces_whatever_follows(pattern, text, after):
    cut = _bpe.safe_cut(text, pattern)
    assert 0 <= cut <= len(text)
    find = COMPILED[pattern].findall
    whole = text + after
    assert find(text[:cut]) + find(whole[cut:]) == find(whole)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_safe_cut_is_found_in_real_text_and_keeps_the_pieces(shared_data, pattern):
    with open(corpus_path("multilingual_emoji"), encoding="utf-8") as f:
        text = f.read(200_000)
    find = COMPILED[pattern].findall
    pieces = find(text)
    for end in range(1_000, len(text), 9_973):
        cut = _bpe.safe_cut(text[:end], pattern)
        assert cut > end - 1_000, "a safe cut should be near the end of ordinary text"
        assert find(text[:cut]) + find(text[cut:]) == pieces


def test_text_without_a_safe_cut_gives_zero():
    assert _bpe.safe_cut("     ", "gpt2") == 0
    assert _bpe.safe_cut("a b c", "none") == 0


def test_unknown_pattern_is_a_value_error():
    with pytest.raises(ValueError, match="unknown pre-tokenization pattern"):
        _bpe.pretokenize("text", "gpt5")
