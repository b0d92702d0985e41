"""The Python surface of the tokenizer: properties, pickling, SimpleTokenizer and the CLI."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from smallgpt.tokenizer.bpe import Tokenizer
from smallgpt.tokenizer.cli import main
from smallgpt.tokenizer.simple import SimpleTokenizer

from tests.corpora import corpus_path
from tests.tokenizer_helpers import PATTERNS, corpus_text, tiktoken_twin, trained

pytest.importorskip("tiktoken")


@pytest.fixture
def tokenizer(shared_data) -> Tokenizer:
    return trained("shakespeare_gpt2")


def test_properties_describe_the_vocabulary(tokenizer):
    assert tokenizer.vocab_size == tokenizer.get_vocab_size() == 2000
    assert tokenizer.special_tokens == {"<|endoftext|>": 1998, "<|pad|>": 1999}
    assert tokenizer.eos_token_id == 1998
    assert tokenizer.pad_token_id == 1999
    assert tokenizer.pattern == PATTERNS["gpt2"]
    assert trained("multilingual_cl100k").pattern == PATTERNS["cl100k"]
    assert tokenizer.token_dtype == np.uint16


def test_token_byte_lengths_sum_to_the_texts_utf8_length(tokenizer):
    text = corpus_text("tinyshakespeare", 5000) + " naïve café — 東京 🙂"
    lengths = tokenizer.token_byte_lengths()
    assert lengths.dtype == np.int64 and lengths.shape == (tokenizer.vocab_size,)
    assert int(lengths[tokenizer.encode(text)].sum()) == len(text.encode("utf-8"))
    assert lengths[list(tokenizer.special_tokens.values())].tolist() == [0, 0]
    padded = tokenizer.token_byte_lengths(2048)
    assert padded.shape == (2048,) and np.array_equal(padded[:2000], lengths)
    assert not padded[2000:].any()
    with pytest.raises(ValueError, match="smaller than the vocabulary"):
        tokenizer.token_byte_lengths(1999)


def test_file_encoders_draw_a_progress_bar_without_changing_the_ids(tokenizer, tmp_path, capsys):
    path = tmp_path / "text.txt"
    text = corpus_text("tinyshakespeare", 20000)
    path.write_text(text, encoding="utf-8")
    expected = tiktoken_twin(tokenizer).encode_ordinary(text)
    capsys.readouterr()
    assert tokenizer.encode_file_to_numpy(path, progress=True).tolist() == expected
    bar = capsys.readouterr().err
    assert "text.txt" in bar and "100%" in bar
    out = tmp_path / "ids.bin"
    assert tokenizer.encode_file_to_bin(path, out, progress=True) == len(expected)
    assert np.fromfile(out, dtype=np.uint16).tolist() == expected
    assert "100%" in capsys.readouterr().err
    assert tokenizer.encode_file_to_numpy(path).tolist() == expected
    assert capsys.readouterr().err == ""


def test_special_tokens_is_a_copy(tokenizer):
    tokenizer.special_tokens["<|endoftext|>"] = 5
    assert tokenizer.eos_token_id == 1998


def test_tokenizer_without_end_of_text_cannot_add_it():
    text = corpus_text("tinyshakespeare", 20_000)
    tokenizer = Tokenizer.train([text], vocab_size=300, special_tokens=["<|x|>"])
    assert tokenizer.eos_token_id is None and tokenizer.pad_token_id is None
    with pytest.raises(ValueError, match="add_special_tokens=True needs"):
        tokenizer.encode("text", add_special_tokens=True)


def test_pickle_round_trip_keeps_the_encoding(tokenizer):
    copy = pickle.loads(pickle.dumps(tokenizer))
    text = corpus_text("tinyshakespeare", 50_000)
    assert copy.encode(text) == tokenizer.encode(text)
    assert copy.to_json() == tokenizer.to_json()
    assert copy.special_tokens == tokenizer.special_tokens


def test_constructor_wants_a_core():
    with pytest.raises(TypeError, match="use Tokenizer.train"):
        Tokenizer("tok.json")


def test_repr_names_size_pattern_and_specials(tokenizer):
    assert repr(tokenizer) == (
        "Tokenizer(vocab_size=2000, pattern='gpt2', special_tokens=['<|endoftext|>', '<|pad|>'])"
    )


def test_simple_tokenizer_trains_encodes_and_decodes(shared_data):
    simple = SimpleTokenizer(vocab_size=600).train([corpus_text("tinyshakespeare", 100_000)])
    text = "First Citizen:\nBefore we proceed any further, hear me speak."
    ids = simple.encode(text)
    twin = tiktoken_twin(simple.tokenizer)
    assert ids == twin.encode_ordinary(text)
    assert simple.encode(text, add_special_tokens=True) == [simple.eos_token_id] + ids
    assert simple.decode(ids) == text
    assert simple.get_vocab_size() == 600
    assert simple.pad_token_id == 599 and simple.eos_token_id == 598


def test_simple_tokenizer_rejects_bad_sizes_and_use_before_training():
    with pytest.raises(ValueError, match="at least 258"):
        SimpleTokenizer(vocab_size=100)
    with pytest.raises(TypeError, match="vocab_size must be an int"):
        SimpleTokenizer(vocab_size="big")
    with pytest.raises(RuntimeError, match="not trained"):
        SimpleTokenizer().encode("text")


def test_cli_trains_then_encodes_files_like_tiktoken(tmp_path, shared_data):
    tok_path = tmp_path / "tok.json"
    inputs = [str(corpus_path("tinyshakespeare")), str(corpus_path("multilingual_emoji"))]
    assert main(["train", "--input", *inputs, "--vocab-size", "800", "--out", str(tok_path)]) == 0
    assert json.loads(tok_path.read_text())["format"] == "smallgpt-bpe"
    tokenizer = Tokenizer.load(tok_path)
    assert tokenizer.vocab_size == 800

    out = tmp_path / "data.bin"
    assert (
        main(["encode", "--tokenizer", str(tok_path), "--input", *inputs, "--out", str(out)]) == 0
    )
    twin = tiktoken_twin(tokenizer)
    texts = [corpus_text(name) for name in ("tinyshakespeare", "multilingual_emoji")]
    expected = [i for text in texts for i in twin.encode_ordinary(text)]
    assert np.fromfile(out, dtype=np.uint16).tolist() == expected


def test_cli_runs_as_a_module_and_reports_missing_input(tmp_path, tokenizer):
    tok_path = tmp_path / "tok.json"
    tokenizer.save(tok_path)
    missing = tmp_path / "missing.txt"
    command = [sys.executable, "-m", "smallgpt.tokenizer", "encode", "--tokenizer", str(tok_path)]
    done = subprocess.run(
        [*command, "--input", str(missing), "--out", str(tmp_path / "x.bin")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert f"input file not found: {missing}" in done.stderr  # as prepare and train say
