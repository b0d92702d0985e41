"""BPE training: the merges equal Hugging Face `tokenizers`' BpeTrainer's and a pure-Python
reference's; streaming files, batching and threads do not change them; bad input is rejected."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import smallgpt.tokenizer.bpe as tokenizer_module
from hypothesis import given, settings
from hypothesis import strategies as st
from smallgpt.tokenizer.bpe import DEFAULT_SPECIAL_TOKENS, Tokenizer

from tests.bpe_reference import hf_merges, our_merges, reference_merges
from tests.corpora import CORPORA

pytest.importorskip("tokenizers")


def read(shared_data: Path, name: str) -> str:
    return (shared_data / CORPORA[name]).read_text(encoding="utf-8")


def assert_same_as_hf(
    texts, vocab_size, pattern, min_frequency, special_tokens=DEFAULT_SPECIAL_TOKENS
):
    ours = Tokenizer.train(
        texts,
        vocab_size,
        special_tokens=special_tokens,
        pattern=pattern,
        min_frequency=min_frequency,
    )
    expected = hf_merges(
        texts,
        vocab_size,
        pattern=pattern,
        regex_string=ours.pattern,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
    )
    merges = our_merges(ours)
    assert len(merges) == len(expected)
    first_difference = next((i for i, (a, b) in enumerate(zip(merges, expected)) if a != b), None)
    assert first_difference is None, (
        f"merge {first_difference}: ours {merges[first_difference]}, "
        f"HF {expected[first_difference]}"
    )
    return ours


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k"])
@pytest.mark.parametrize(
    "name", ["tinyshakespeare", "wikitext2_valid", "wikitext2_test", "multilingual_emoji"]
)
def test_merges_equal_hf_bpe_trainer_on_each_corpus(shared_data, name, pattern):
    tokenizer = assert_same_as_hf([read(shared_data, name)], 10000, pattern, 2)
    assert tokenizer.vocab_size == 10000
    assert tokenizer.special_tokens == {"<|endoftext|>": 9998, "<|pad|>": 9999}


@pytest.mark.filterwarnings("ignore:the trained vocabulary has")
@pytest.mark.parametrize("min_frequency", [0, 7, 200])
@pytest.mark.parametrize("vocab_size", [300, 1000])
def test_merges_equal_hf_for_small_vocabularies_and_min_frequencies(
    shared_data, vocab_size, min_frequency
):
    text = read(shared_data, "tinyshakespeare")[:300_000]
    assert_same_as_hf([text], vocab_size, "gpt2", min_frequency)


def test_merges_equal_hf_when_min_frequency_stops_training(shared_data):
    text = read(shared_data, "wikitext2_test")[:200_000]
    with pytest.warns(UserWarning, match="fewer than the requested vocab_size=10000"):
        tokenizer = assert_same_as_hf([text], 10000, "cl100k", 40)
    assert tokenizer.vocab_size < 10000


def test_merges_equal_hf_with_several_texts_and_other_special_tokens(shared_data):
    texts = read(shared_data, "multilingual_emoji").splitlines(keepends=True)
    assert_same_as_hf(texts, 3000, "gpt2", 2, special_tokens=("<s>", "</s>", "<unk>"))


def test_merges_equal_hf_without_pre_tokenization(shared_data):
    # Each line is one piece: HF's ByteLevel without its regex.
    lines = read(shared_data, "tinyshakespeare")[:100_000].splitlines()
    assert_same_as_hf(lines, 800, "none", 2)


def test_merges_equal_hf_on_gutenberg_10mb_gpt2(shared_data):
    assert_same_as_hf([read(shared_data, "gutenberg_10mb")], 10000, "gpt2", 2)


@pytest.mark.slow
def test_merges_equal_hf_on_gutenberg_10mb_cl100k(shared_data):
    assert_same_as_hf([read(shared_data, "gutenberg_10mb")], 10000, "cl100k", 5)


@pytest.mark.slow
def test_streamed_training_on_the_57mb_corpus_equals_hf(shared_data):
    path = shared_data / CORPORA["gutenberg"]
    ours = Tokenizer.train_files(path, 10000)
    expected = hf_merges(
        [path.read_text(encoding="utf-8")],
        10000,
        pattern="gpt2",
        regex_string=ours.pattern,
        min_frequency=2,
        special_tokens=DEFAULT_SPECIAL_TOKENS,
    )
    assert our_merges(ours) == expected


_ALPHABET = "aab ba  ab\n\n\t0123.,!?'sSlL\u00e9\u00ad\x00\x7f\u20ac\U0001f600\u4e2d\r"


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.text(alphabet=_ALPHABET, max_size=200), min_size=1, max_size=4),
    learned=st.integers(min_value=0, max_value=40),
    min_frequency=st.sampled_from([0, 1, 2, 3]),
    pattern=st.sampled_from(["gpt2", "cl100k", "none"]),
)
def test_merges_equal_a_recounting_python_reference(texts, learned, min_frequency, pattern):
    if not any(texts):
        return
    vocab_size = 256 + len(DEFAULT_SPECIAL_TOKENS) + learned
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = Tokenizer.train(texts, vocab_size, pattern=pattern, min_frequency=min_frequency)
    expected = reference_merges(
        texts,
        vocab_size,
        regex_string=ours.pattern,
        min_frequency=min_frequency,
        special_tokens=DEFAULT_SPECIAL_TOKENS,
    )
    assert our_merges(ours) == expected
    assert ours.vocab_size == 256 + len(expected) + len(DEFAULT_SPECIAL_TOKENS)


def test_train_files_equals_train_on_the_whole_texts(shared_data, tmp_path):
    # Over 8 MB, so the multilingual file is streamed in more than one chunk.
    multilingual = read(shared_data, "multilingual_emoji") * 17
    big = tmp_path / "multilingual.txt"
    big.write_text(multilingual, encoding="utf-8")
    shakespeare = shared_data / CORPORA["tinyshakespeare"]
    for pattern in ["gpt2", "cl100k"]:
        streamed = Tokenizer.train_files([shakespeare, str(big)], 5000, pattern=pattern)
        whole = Tokenizer.train(
            [read(shared_data, "tinyshakespeare"), multilingual], 5000, pattern=pattern
        )
        assert streamed.to_json() == whole.to_json()


def test_texts_from_a_generator_in_small_batches_train_like_a_list(shared_data, monkeypatch):
    lines = read(shared_data, "wikitext2_valid").splitlines(keepends=True)
    expected = Tokenizer.train(lines, 2000)
    monkeypatch.setattr(tokenizer_module, "_TRAIN_BATCH_CHARS", 10_000)
    assert Tokenizer.train((line for line in lines), 2000).to_json() == expected.to_json()


def test_thread_count_does_not_change_the_merges(shared_data):
    text = read(shared_data, "wikitext2_valid")
    results = {Tokenizer.train([text], 3000, num_threads=n).to_json() for n in [1, 2, 3, None]}
    assert len(results) == 1


def test_special_tokens_take_the_last_ids(shared_data):
    tokenizer = Tokenizer.train(
        [read(shared_data, "tinyshakespeare")], 500, special_tokens=("<a>", "<b>", "<c>")
    )
    assert tokenizer.special_tokens == {"<a>": 497, "<b>": 498, "<c>": 499}
    assert tokenizer.eos_token_id is None


def test_too_few_pairs_warns_with_the_numbers():
    with pytest.warns(UserWarning, match=r"has 261 ids, fewer than the requested vocab_size=900"):
        tokenizer = Tokenizer.train(["abc abc abc"], 900)
    assert tokenizer.vocab_size == 261


def test_enough_pairs_does_not_warn(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Tokenizer.train([read(shared_data, "tinyshakespeare")], 1000)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: Tokenizer.train(["ok", 3]), TypeError, r"texts\[1\] must be a str, not int"),
        (lambda: Tokenizer.train("a text"), TypeError, "not a single text"),
        (lambda: Tokenizer.train([b"bytes"]), TypeError, "must be a str"),
        (lambda: Tokenizer.train(["a"], 10000, special_tokens=[1]), TypeError, "special_tokens"),
        (lambda: Tokenizer.train(["a"], 257), ValueError, "at least 256 .* = 258"),
        (lambda: Tokenizer.train(["a"], 300.0), TypeError, "vocab_size must be an int"),
        (lambda: Tokenizer.train([]), ValueError, "empty corpus"),
        (lambda: Tokenizer.train(["", ""]), ValueError, "empty corpus"),
        (lambda: Tokenizer.train_files([]), ValueError, "empty corpus"),
        (lambda: Tokenizer.train(["a"], pattern="gpt5"), ValueError, "unknown pre-tokenization"),
        (lambda: Tokenizer.train(["a"], num_threads=0), ValueError, "num_threads"),
        (lambda: Tokenizer.train(["a"], min_frequency=-1), ValueError, "min_frequency"),
        (
            lambda: Tokenizer.train(["a"], special_tokens=["<x>", "<x>"]),
            ValueError,
            "listed twice",
        ),
        (lambda: Tokenizer.train(["a"], special_tokens=[""]), ValueError, "non-empty"),
        (lambda: Tokenizer.train_files([3]), TypeError, r"paths\[0\]"),
    ],
)
def test_bad_training_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_missing_file_raises_file_not_found_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "corpus.txt"
    with pytest.raises(FileNotFoundError, match="corpus.txt"):
        Tokenizer.train_files([missing])


def test_file_that_is_not_utf8_names_the_bad_byte(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9 ".encode("utf-8") * 10 + b"na\xefve")
    with pytest.raises(
        ValueError, match=r"latin1.txt: not UTF-8 text \(invalid byte at offset 62\)"
    ):
        Tokenizer.train_files(bad)
