"""Decoding: ids -> bytes as tiktoken gives them, text with U+FFFD like Python's
`bytes.decode(errors="replace")`, lossless round trips, and the streaming decoder."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smallgpt.tokenizer.streaming import StreamDecoder

from tests.tokenizer_helpers import TOKENIZERS, corpus_text, tiktoken_twin, trained

pytest.importorskip("tiktoken")


@pytest.fixture(params=sorted(TOKENIZERS))
def tokenizer(request, shared_data):
    return trained(request.param)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_decode_of_encode_gives_back_any_text(shared_data, text):
    for name in TOKENIZERS:
        tokenizer = trained(name)
        assert tokenizer.decode(tokenizer.encode(text)) == text
        assert tokenizer.decode_bytes(tokenizer.encode(text)) == text.encode("utf-8")


def test_decode_of_encode_gives_back_the_multilingual_corpus(tokenizer):
    text = corpus_text("multilingual_emoji")
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode(tokenizer.encode_to_numpy(text)) == text


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_decode_of_any_ids_matches_tiktoken_bytes(shared_data, data):
    for name in TOKENIZERS:
        tokenizer = trained(name)
        ids = data.draw(st.lists(st.integers(0, tokenizer.vocab_size - 1), max_size=50))
        expected = tiktoken_twin(tokenizer).decode_bytes(ids)
        assert tokenizer.decode_bytes(ids) == expected
        assert tokenizer.decode(ids) == expected.decode("utf-8", errors="replace")


def test_id_to_bytes_matches_tiktoken_for_every_id(tokenizer):
    twin = tiktoken_twin(tokenizer)
    for token_id in range(tokenizer.vocab_size):
        assert tokenizer.id_to_bytes(token_id) == twin.decode_single_token_bytes(token_id)


def test_decode_accepts_arrays_and_tuples(tokenizer):
    ids = tokenizer.encode("Numpy arrays, tuples and ranges decode too ✓")
    text = tokenizer.decode(ids)
    assert tokenizer.decode(np.asarray(ids, dtype=np.uint16)) == text
    assert tokenizer.decode(tuple(ids)) == text
    assert tokenizer.decode(iter(ids)) == text


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64))
def test_stream_decoder_fed_byte_by_byte_equals_a_lossy_decode(shared_data, data):
    # Ids 0..255 are the single bytes, so any byte string is a sequence of ids.
    decoder = StreamDecoder(trained("shakespeare_gpt2"))
    pieces = [decoder.push(byte) for byte in data]
    pieces.append(decoder.finish())
    assert "".join(pieces) == data.decode("utf-8", errors="replace")


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=100), cut=st.integers(1, 5))
def test_stream_decoder_releases_only_whole_characters(shared_data, text, cut):
    tokenizer = trained("multilingual_cl100k")
    ids = tokenizer.encode(text)
    decoder = tokenizer.stream_decoder()
    emitted = ""
    for start in range(0, len(ids), cut):
        emitted += decoder.push(ids[start : start + cut])
        # Everything released so far is a prefix of the text, never a broken character.
        assert text.startswith(emitted)
    assert decoder.pending_bytes == b""
    assert emitted + decoder.finish() == text


def test_stream_decoder_holds_a_split_emoji_until_it_is_complete():
    decoder = StreamDecoder(trained("shakespeare_gpt2"))
    emoji = "😀".encode()
    assert [decoder.push(b) for b in emoji[:3]] == ["", "", ""]
    assert decoder.pending_bytes == emoji[:3]
    assert decoder.push(emoji[3]) == "😀"


def test_stream_decoder_finish_replaces_an_unfinished_character():
    decoder = StreamDecoder(trained("shakespeare_gpt2"))
    assert decoder.push(list("é".encode()[:1])) == ""
    assert decoder.finish() == "\ufffd"
    assert decoder.push(list(b"ok")) == "ok"


@pytest.mark.parametrize("bad_id", [-1, 10**6, 2**40, 2**70])
def test_decode_names_an_unknown_id(bad_id):
    tokenizer = trained("shakespeare_gpt2")
    with pytest.raises(ValueError, match=f"unknown token id {bad_id}"):
        tokenizer.decode([1, 2, bad_id])
    with pytest.raises(ValueError, match=f"unknown token id {bad_id}"):
        tokenizer.decode_bytes([bad_id])
    with pytest.raises(ValueError, match=f"unknown token id {bad_id}"):
        tokenizer.id_to_bytes(bad_id)


def test_decode_of_the_first_id_past_the_vocabulary_fails():
    tokenizer = trained("shakespeare_gpt2")
    with pytest.raises(ValueError, match=f"unknown token id {tokenizer.vocab_size}"):
        tokenizer.decode([tokenizer.vocab_size])


@pytest.mark.parametrize("bad", ["text", b"\x01", 5, [1.5], ["a"], None])
def test_decode_rejects_what_is_not_a_sequence_of_ints(bad):
    with pytest.raises(TypeError):
        trained("shakespeare_gpt2").decode(bad)


def test_stream_decoder_needs_a_tokenizer():
    with pytest.raises(TypeError, match="must be a Tokenizer"):
        StreamDecoder("not a tokenizer")
