"""Vocabulary files: smallgpt's JSON round-trips and rejects foreign or corrupt files; the
tiktoken and Hugging Face exports encode exactly like the tokenizer."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from smallgpt.tokenizer.bpe import Tokenizer
from smallgpt.tokenizer.simple import SimpleTokenizer

from tests.corpora import CORPORA

SAMPLE = "Hello, world! It's 2024... naïve café — 東京 😀👍🏽\n\n  indented\tTAB\r\nend's"


@pytest.fixture(scope="module")
def texts(shared_data: Path) -> dict[str, str]:
    read = lambda name: (shared_data / CORPORA[name]).read_text(encoding="utf-8")
    return {
        "shakespeare": read("tinyshakespeare"),
        "multilingual": read("multilingual_emoji"),
        "wikitext": read("wikitext2_test")[:300_000],
    }


@pytest.fixture(scope="module", params=["gpt2", "cl100k"])
def trained(request, texts) -> Tokenizer:
    corpus = [texts["shakespeare"], texts["multilingual"]]
    return Tokenizer.train(corpus, 4000, pattern=request.param)


def test_save_and_load_round_trip(trained, texts, tmp_path):
    path = tmp_path / "tok.json"
    trained.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.to_json() == trained.to_json()
    assert (loaded.vocab_size, loaded.special_tokens, loaded.pattern) == (
        trained.vocab_size,
        trained.special_tokens,
        trained.pattern,
    )
    for text in [texts["wikitext"], SAMPLE]:
        assert loaded.encode(text) == trained.encode(text)


def test_saved_file_stands_alone(trained, tmp_path):
    """The file's hex merges rebuild every token's bytes without smallgpt."""
    path = tmp_path / "tok.json"
    trained.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert (data["format"], data["version"], data["pattern"]) == (
        "smallgpt-bpe",
        1,
        trained.pattern_name,
    )
    assert data["specials"] == list(trained.special_tokens)
    tokens = [bytes([b]) for b in range(256)]
    for left, right in data["merges"]:
        left, right = bytes.fromhex(left), bytes.fromhex(right)
        assert left in tokens and right in tokens
        tokens.append(left + right)
    assert len(set(tokens)) == len(tokens) == trained.vocab_size - len(data["specials"])
    assert [trained.id_to_bytes(i) for i in range(len(tokens))] == tokens


def test_pattern_none_round_trips(tmp_path):
    tokenizer = Tokenizer.train(["aaa bbb aaa bbb", "ab ab"], 263, pattern="none")
    tokenizer.save(tmp_path / "none.json")
    loaded = Tokenizer.load(tmp_path / "none.json")
    assert loaded.pattern_name == "none"
    assert loaded.encode("aaa bbb ab") == tokenizer.encode("aaa bbb ab")


def _valid_file(trained: Tokenizer) -> dict:
    return json.loads(trained.to_json())


def _bad_files(trained: Tokenizer, tmp_path: Path) -> list[tuple[bytes, str]]:
    """(file content, what the error must say)."""
    valid = _valid_file(trained)
    hf = tmp_path / "hf.json"
    trained.export_hf(hf)
    tiktoken = tmp_path / "ranks.tiktoken"
    trained.export_tiktoken(tiktoken)

    def edited(**changes) -> bytes:
        return json.dumps({**valid, **changes}).encode()

    first = valid["merges"][0]
    return [
        (b"", "invalid JSON"),
        (b"\xff\xfe\x00garbage", "not a smallgpt tokenizer file"),
        (b"[1, 2, 3]", "not an object"),
        (hf.read_bytes(), "Hugging Face tokenizer.json"),
        (tiktoken.read_bytes(), "invalid JSON"),
        (edited(format="tiktoken"), 'format is "tiktoken"'),
        (edited(version=2), "unsupported smallgpt tokenizer file version 2"),
        (edited(version="1"), "version"),
        (edited(pattern="gpt5"), "unknown pre-tokenization pattern"),
        (edited(merges=[[first[0], "zz"]]), '"zz" is not the hex'),
        (edited(merges=[["6162", "63"]]), "not a token defined before this merge"),
        (edited(merges=[first, first]), "merge 1 .* repeats merge 0"),
        (edited(merges=[[first[0]]]), "invalid smallgpt tokenizer file"),
        (edited(specials=["<|pad|>", "<|pad|>"]), "listed twice"),
        (edited(extra_field=1), "unknown field `extra_field`"),
    ]


def test_foreign_and_corrupt_files_raise_value_error_naming_the_problem(trained, tmp_path):
    for i, (content, message) in enumerate(_bad_files(trained, tmp_path)):
        path = tmp_path / f"bad{i}.json"
        path.write_bytes(content)
        with pytest.raises(ValueError, match=message) as caught:
            Tokenizer.load(path)
        assert str(path) in str(caught.value)


def test_loading_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.json"):
        Tokenizer.load(tmp_path / "absent.json")


def _tiktoken_encoding(tokenizer: Tokenizer, path: Path):
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    tokenizer.export_tiktoken(path)
    return tiktoken.Encoding(
        name="smallgpt",
        pat_str=tokenizer.pattern,
        mergeable_ranks=load_tiktoken_bpe(str(path)),
        special_tokens=tokenizer.special_tokens,
    )


def test_tiktoken_export_encodes_identically(trained, texts, tmp_path):
    encoding = _tiktoken_encoding(trained, tmp_path / "ranks.tiktoken")
    assert encoding.n_vocab == trained.vocab_size
    for text in [texts["wikitext"], texts["multilingual"], SAMPLE]:
        assert encoding.encode_ordinary(text) == trained.encode(text)
    with_special = "a<|endoftext|>b<|pad|>" + SAMPLE
    assert encoding.encode(with_special, allowed_special="all") == trained.encode(
        with_special, allowed_special="all"
    )


def test_tiktoken_rank_file_lists_base64_bytes_and_ids(trained, tmp_path):
    path = tmp_path / "ranks.tiktoken"
    trained.export_tiktoken(path)
    lines = path.read_text(encoding="ascii").splitlines()
    assert len(lines) == trained.vocab_size - len(trained.special_tokens)
    for line in lines:
        token, rank = line.split(" ")
        assert base64.b64decode(token) == trained.id_to_bytes(int(rank))


def test_hf_export_encodes_and_decodes_identically(trained, texts, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    path = tmp_path / "tokenizer.json"
    trained.export_hf(path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    assert hf.get_vocab_size() == trained.vocab_size
    for text in [texts["wikitext"], texts["multilingual"], SAMPLE]:
        ids = trained.encode(text)
        assert hf.encode(text).ids == ids
        assert hf.decode(ids) == trained.decode(ids)
    # HF always splits out special tokens: ours does when they are allowed.
    with_special = "a<|endoftext|>b<|pad|>" + SAMPLE
    assert hf.encode(with_special).ids == trained.encode(with_special, allowed_special="all")


def test_hf_export_without_pre_tokenization_encodes_identically(texts, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    lines = texts["shakespeare"].splitlines(keepends=True)[:3000]
    tokenizer = Tokenizer.train(lines, 600, pattern="none")
    tokenizer.export_hf(tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for line in lines[::50]:
        assert hf.encode(line).ids == tokenizer.encode(line)


def test_simple_tokenizer_trains_saves_and_loads_any_suffix(texts, tmp_path):
    simple = SimpleTokenizer(vocab_size=700).train([texts["shakespeare"]])
    path = tmp_path / "tokenizer.bin"
    simple.save(path)
    assert json.loads(path.read_text(encoding="utf-8"))["format"] == "smallgpt-bpe"
    loaded = SimpleTokenizer.load(path)
    assert loaded.get_vocab_size() == 700
    assert (loaded.eos_token_id, loaded.pad_token_id) == (698, 699)
    ids = loaded.encode(SAMPLE, add_special_tokens=True)
    assert ids == simple.encode(SAMPLE, add_special_tokens=True)
    assert ids[0] == 698 and loaded.decode(ids[1:]) == SAMPLE
