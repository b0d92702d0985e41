"""Fuzzing the whole tokenizer life cycle with generated text: train on any corpus, save, load,
encode, decode, stream-decode. Never a panic; the round trip always holds; text that is not valid
Unicode (lone surrogates, e.g. from bytes decoded with errors="surrogateescape") gets a clear
ValueError."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smallgpt.tokenizer.bpe import EOS_TOKEN, PAD_TOKEN, Tokenizer
from smallgpt.tokenizer.simple import SimpleTokenizer

# any code point but surrogates, with the special token strings and their fragments mixed in
TEXT = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.sampled_from([EOS_TOKEN, PAD_TOKEN, "<|", "|>", "\r\n", "  ", "'s", "😀", "\u0301"]),
    ),
    max_size=6,
).map("".join)

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def round_trips(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode_bytes(ids) == text.encode("utf-8")
    stream = tokenizer.stream_decoder()
    assert "".join(stream.push(i) for i in ids) + stream.finish() == text


@FUZZ
@given(
    corpus=st.lists(TEXT, min_size=1, max_size=5),
    probes=st.lists(TEXT, max_size=3),
    learned=st.integers(0, 80),
    pattern=st.sampled_from(["gpt2", "cl100k", "none"]),
    min_frequency=st.integers(0, 3),
)
def test_train_save_load_encode_decode_round_trips_any_text(
    corpus, probes, learned, pattern, min_frequency
):
    vocab_size = 258 + learned
    if not "".join(corpus):
        with pytest.raises(ValueError, match="empty corpus"):
            Tokenizer.train(corpus, vocab_size, pattern=pattern, min_frequency=min_frequency)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fewer ids than requested" on tiny corpora
        tokenizer = Tokenizer.train(
            corpus, vocab_size, pattern=pattern, min_frequency=min_frequency
        )
    assert 258 <= tokenizer.vocab_size <= vocab_size
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tok.json"
        tokenizer.save(path)
        loaded = Tokenizer.load(path)
    assert loaded.to_json() == tokenizer.to_json()
    for text in [*corpus, *probes]:
        round_trips(loaded, text)
        assert loaded.encode(text) == tokenizer.encode(text)
    assert loaded.encode_batch([*corpus, *probes]) == [
        tokenizer.encode(t) for t in [*corpus, *probes]
    ]


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["To be, or not to be, that is the question. Ünïcödé, 日本語, 😀 " * 5]
    return Tokenizer.train(texts, 300, min_frequency=1)


@FUZZ
@given(data=st.binary(max_size=120))
def test_bytes_decoded_with_replacement_round_trip(tokenizer, data):
    round_trips(tokenizer, data.decode("utf-8", errors="replace"))


@FUZZ
@given(data=st.binary(max_size=120))
def test_surrogate_escaped_bytes_round_trip_or_raise_a_clear_error(tokenizer, data):
    text = data.decode("utf-8", errors="surrogateescape")
    try:
        valid = text.encode("utf-8") == data
    except UnicodeEncodeError:
        valid = False
    if valid:
        round_trips(tokenizer, text)
        return
    for call in (
        lambda: tokenizer.encode(text),
        lambda: tokenizer.encode_batch(["fine", text]),
        lambda: tokenizer.encode_to_numpy(text),
        lambda: tokenizer.encode_batch_to_numpy(["fine", text]),
        lambda: Tokenizer.train([text], 300),
    ):
        with pytest.raises(ValueError, match="surrogates not allowed"):
            call()


@pytest.fixture(scope="module")
def simple(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tok") / "tok.json"
    tokenizer.save(path)
    return SimpleTokenizer.load(path)


@FUZZ
@given(before=st.text(max_size=20), surrogate=st.characters(categories=["Cs"]))
def test_lone_surrogates_are_refused_with_a_value_error(tokenizer, simple, before, surrogate):
    text = before + surrogate
    with pytest.raises(ValueError, match="surrogates not allowed"):
        tokenizer.encode(text)
    with pytest.raises(ValueError, match="surrogates not allowed"):
        simple.encode(text)
