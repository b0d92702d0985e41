"""Corpus readers: every form of the same documents reads back as those documents, in order, and
every kind of bad input is an error naming the file and the place."""

from __future__ import annotations

import importlib.util
import json
import threading

import pytest
from smallgpt import _bpe
from smallgpt.corpus.chunks import read_chunks
from smallgpt.corpus.sources import (
    CorpusError,
    accepted_extensions,
    iter_documents,
    iter_pieces,
    resolve_sources,
)
from smallgpt.tokenizer.bpe import Tokenizer

from tests.corpora import (
    FORMS,
    sample_documents,
    write_bytes,
    write_form,
    write_jsonl,
    write_parquet,
    write_text_dir,
)

pytest.importorskip("pyarrow")
pytest.importorskip("zstandard")


@pytest.fixture(scope="module")
def docs(shared_data) -> list[str]:
    return sample_documents(shared_data)


@pytest.mark.parametrize("form", FORMS)
def test_every_form_reads_back_the_same_documents_in_order(tmp_path, docs, form):
    path = write_form(tmp_path, form, docs)
    assert list(iter_documents([path])) == docs


def test_directories_and_globs_read_their_files_sorted(tmp_path, docs):
    root = write_text_dir(tmp_path / "texts", docs)
    (root / "notes.md").write_text("not a corpus file")
    assert list(iter_documents([root])) == docs
    assert list(iter_documents([str(root / "doc_*.txt")])) == docs
    assert [s.name for s in resolve_sources([str(root / "doc_0000[12].txt")])] == [
        str(root / "doc_00001.txt"),
        str(root / "doc_00002.txt"),
    ]


def test_a_text_file_is_cut_into_pieces_that_encode_like_the_whole(tmp_path, shared_data):
    text = (shared_data / "multilingual_emoji.txt").read_text(encoding="utf-8")[:60_000]
    path = write_bytes(tmp_path / "world.txt.gz", text.encode("utf-8"))
    tokenizer = Tokenizer.train([text], vocab_size=400)
    pieces = list(
        iter_pieces(
            resolve_sources([path]),
            piece_chars=2000,
            cut=lambda t: _bpe.safe_cut(t, tokenizer.pattern_name),
        )
    )
    assert len(pieces) > 10 and "".join(p.text for p in pieces) == text
    assert [p.last for p in pieces] == [False] * (len(pieces) - 1) + [True]
    assert pieces[0].first and not any(p.first for p in pieces[1:])
    joined = [i for p in pieces for i in tokenizer.encode(p.text)]
    assert joined == tokenizer.encode(text)


def test_chunks_hold_every_piece_once_in_order(tmp_path, docs):
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    chunks = list(read_chunks(resolve_sources([path]), chunk_chars=1000))
    assert len(chunks) > 3 and [c.index for c in chunks] == list(range(len(chunks)))
    assert [p.text for c in chunks for p in c.pieces] == docs
    assert chunks[-1].documents == len(docs)
    done = [c.bytes_done for c in chunks]
    assert done == sorted(done) and done[-1] <= path.stat().st_size


def test_an_error_on_the_reader_thread_is_raised_to_the_consumer(tmp_path, docs):
    path = tmp_path / "docs.jsonl"
    write_jsonl(path, docs)
    path.write_bytes(path.read_bytes() + b"{broken\n")
    with pytest.raises(CorpusError, match=f"line {len(docs) + 1}: not JSON"):
        for _ in read_chunks(resolve_sources([path]), chunk_chars=3000):
            pass


def test_stopping_early_ends_the_reader_thread(tmp_path, docs):
    path = write_jsonl(tmp_path / "docs.jsonl", docs * 20)
    chunks = read_chunks(resolve_sources([path]), chunk_chars=1000)
    next(chunks)
    chunks.close()
    assert not any(t.name == "smallgpt-corpus-reader" for t in threading.enumerate())


def jsonl_bytes(*records: object) -> bytes:
    return b"".join(
        (r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records
    )


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("a.jsonl", jsonl_bytes({"text": "ok"}, b"{nope"), r"a\.jsonl:line 2: not JSON"),
        (
            "b.jsonl",
            jsonl_bytes({"text": "ok"}, {"body": "x", "id": 1}),
            r"b\.jsonl:line 2: no 'text' field \(it has \['body', 'id'\]\)",
        ),
        (
            "c.jsonl",
            jsonl_bytes({"text": 3}),
            r"c\.jsonl:line 1: field 'text' is int, not a string",
        ),
        ("d.jsonl", jsonl_bytes(["text"]), r"d\.jsonl:line 1: no 'text' field \(it has list\)"),
        (
            "e.jsonl.gz",
            jsonl_bytes({"text": "ok"}) + b'{"text": "caf\xe9"}\n',
            r"e\.jsonl\.gz:line 2: not UTF-8 \(invalid byte at offset 28\)",
        ),
        (
            "f.txt",
            "naïve".encode() + b"\xff rest",
            r"f\.txt: not UTF-8 \(invalid byte at offset 6\)",
        ),
        ("g.txt.bz2", b"ok\xe2\x82", r"g\.txt\.bz2: not UTF-8 \(invalid byte at offset 2\)"),
        ("h.jsonl.gz", None, r"h\.jsonl\.gz: cannot decompress"),
    ],
)
def test_bad_records_name_the_file_and_the_place(tmp_path, name, data, message):
    if data is None:  # a file cut short: the compressed stream ends early
        path = write_jsonl(tmp_path / name, ["some text"] * 100)
        path.write_bytes(path.read_bytes()[:-9])
    else:
        path = write_bytes(tmp_path / name, data)
    with pytest.raises(CorpusError, match=message):
        list(iter_documents([path]))


def test_skip_bad_records_skips_and_counts_them(tmp_path):
    data = jsonl_bytes({"text": "one"}, b"{nope", {"body": 1}, {"text": None}, {"text": "two"})
    path = write_bytes(tmp_path / "mixed.jsonl.zst", data)
    sources = resolve_sources([path])
    chunks = list(read_chunks(sources, skip_bad_records=True))
    assert [p.text for c in chunks for p in c.pieces] == ["one", "two"]
    assert chunks[-1].skipped == 3 and chunks[-1].documents == 2


def test_parquet_without_the_column_lists_its_columns(tmp_path, docs):
    path = write_parquet(tmp_path / "docs.parquet", docs)
    with pytest.raises(
        CorpusError, match=r"docs\.parquet: no column 'body' \(columns: \['id', 'text'\]\)"
    ):
        list(iter_documents([path], text_field="body"))
    with pytest.raises(CorpusError, match=r"column 'id' holds int64, not strings"):
        list(iter_documents([path], text_field="id"))


def test_parquet_null_rows_are_errors_or_skipped(tmp_path):
    import pyarrow as pa  # the "data" extra
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", None, "b"]}), tmp_path / "n.parquet")
    with pytest.raises(CorpusError, match=r"n\.parquet:row 2: column 'text' is null"):
        list(iter_documents([tmp_path / "n.parquet"]))
    assert list(iter_documents([tmp_path / "n.parquet"], skip_bad_records=True)) == ["a", "b"]


def test_unknown_inputs_are_clear_errors(tmp_path):
    (tmp_path / "table.csv").write_text("text\nhello\n")
    with pytest.raises(
        CorpusError, match=r"table\.csv: unknown file type; accepted: \.txt, .*\.parquet\.bz2"
    ):
        resolve_sources([tmp_path / "table.csv"])
    assert ".jsonl.zst" in accepted_extensions() and ".ndjson" in accepted_extensions()
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        resolve_sources([tmp_path / "missing.jsonl"])
    with pytest.raises(FileNotFoundError, match="matches no file"):
        resolve_sources([str(tmp_path / "*.jsonl")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no corpus files in this directory"):
        resolve_sources([tmp_path / "empty"])
    with pytest.raises(ValueError, match="no corpus inputs"):
        resolve_sources([])


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets installed")
def test_hf_inputs_without_datasets_name_the_extra():
    with pytest.raises(ImportError, match=r"smallgpt\[hf-datasets\]"):
        list(iter_documents(["hf:roneneldan/TinyStories:validation"]))


def test_hf_dataset_saved_to_disk_reads_its_rows(tmp_path, docs):
    datasets = pytest.importorskip("datasets")
    data = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": docs}),
            "test": datasets.Dataset.from_dict({"text": ["t"]}),
        }
    )
    data.save_to_disk(str(tmp_path / "ds"))
    assert list(iter_documents([f"hf:{tmp_path / 'ds'}"])) == docs
    assert list(iter_documents([f"hf:{tmp_path / 'ds'}:test"])) == ["t"]
    with pytest.raises(CorpusError, match="no split 'dev'"):
        list(iter_documents([f"hf:{tmp_path / 'ds'}:dev"]))
