"""Corpus readers: every form of the same documents reads back as those documents, in order, and
every kind of bad input is an error naming the file and the place."""

from __future__ import annotations

import json
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


def test_gzip_reads_the_same_with_and_without_isal(tmp_path, docs, monkeypatch):
    pytest.importorskip("isal")
    path = write_jsonl(tmp_path / "docs.jsonl.gz", docs)
    assert list(iter_documents([path])) == docs
    monkeypatch.setitem(sys.modules, "isal", None)  # the stdlib's gzip then reads it
    assert list(iter_documents([path])) == docs
    path.write_bytes(path.read_bytes()[:-9])
    with pytest.raises(CorpusError, match=r"docs\.jsonl\.gz: cannot decompress"):
        list(iter_documents([path]))


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
    chunks = list(read_chunks(resolve_sources([path]), chunk_chars=1000, record_bytes=500))
    assert len(chunks) > 3 and [c.index for c in chunks] == list(range(len(chunks)))
    assert [t for c in chunks for p in c.pieces for t in p.batch.texts()] == docs
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
    assert [t for c in chunks for p in c.pieces for t in p.batch.texts()] == ["one", "two"]
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


def test_hf_inputs_without_datasets_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails as if absent
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


def python_reading(line: bytes, field: str) -> tuple:
    """What Python's json makes of one JSONL line (the reference for `_bpe.parse_jsonl`)."""
    if not line.strip():
        return ("blank",)
    try:
        record = json.loads(line)
    except UnicodeDecodeError:
        return ("utf8",)
    except json.JSONDecodeError:
        return ("json",)
    if not isinstance(record, dict):
        return ("missing", type(record).__name__)
    if field not in record:
        # A key with a lone surrogate escape (no UTF-8) is listed with U+FFFD for its bytes.
        return ("missing", sorted({as_text(key) for key in record}))
    if not isinstance(record[field], str):
        return ("type", type(record[field]).__name__)
    if as_text(record[field]) != record[field]:
        return ("json",)  # a lone surrogate escape in the text: no UTF-8 text to encode
    return ("text", record[field])


def as_text(text: str) -> str:
    """`text` with each lone surrogate's UTF-8-like bytes decoded as U+FFFD."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def rust_reading(line: bytes, field: str) -> tuple:
    batch, bad = _bpe.parse_jsonl(line, field)
    texts = batch.texts()
    if texts:
        return ("text", *texts)
    if not bad:
        return ("blank",)
    ((_, index, kind, detail),) = bad
    assert index == 0
    return (kind,) if kind in ("utf8", "json") else (kind, detail)


# JSON values as Python writes them: NaN and infinities included; integers within 64 bits and
# 32-bit floats (serde_json reads a wider integer as a float, an overflowing exponent as an
# error, where Python makes an int or inf).
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 64) - 1),
    st.floats(width=32),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
KEYS = st.sampled_from(["text", "id", "meta", "tëxt", ""]) | st.text(max_size=4)
RECORDS = st.dictionaries(KEYS, VALUES, max_size=4) | VALUES
# Mutations that make some lines bad JSON (digits left out: see SCALARS).
MUTATIONS = st.lists(
    st.tuples(st.integers(0, 200), st.sampled_from([*'{}[]":,\\ xN-', "NaN", "", "\xff"])),
    max_size=2,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=RECORDS, ensure_ascii=st.booleans(), mutations=MUTATIONS, repeat=st.booleans())
def test_a_jsonl_line_reads_as_pythons_json_reads_it(record, ensure_ascii, mutations, repeat):
    line = json.dumps(record, ensure_ascii=ensure_ascii).encode("utf-8")
    if repeat and line.startswith(b"{") and line != b"{}":
        line = line[:-1] + b', "text": "again"}'  # a repeated key: the last one counts
    for at, insert in mutations:
        at = min(at, len(line))
        line = line[:at] + insert.encode("latin-1") + line[at + (insert == "") :]
    assert rust_reading(line, "text") == python_reading(line, "text"), line


def test_jsonl_lines_python_accepts_beyond_strict_json():
    lines = [
        b'{"\\ud800": "\\udc00", "text": "lone surrogates elsewhere"}',
        b'{"\\ud800x": 1}',
        b'{"text": "a lone \\udc00 surrogate"}',
        b'\xef\xbb\xbf{"text": "after a byte-order mark"}',
        b'{"score": NaN, "bounds": [-Infinity, Infinity], "text": "numbers"}\r\n',
        b'{"text": Infinity}',
        b" \t\x0c\r\n",
    ]
    for line in lines:
        assert rust_reading(line, "text") == python_reading(line, "text"), line


def test_a_block_of_lines_reads_like_its_lines_one_by_one(docs):
    lines = [json.dumps({"text": d}).encode() for d in docs]
    lines[3:3] = [b"{not json", b"", b'{"body": 1}', b'"text"', b'{"text": "caf\xe9"}']
    block = b"\n".join(lines * 40)
    batch, bad = _bpe.parse_jsonl(block, "text", num_threads=3)
    assert batch.texts() == docs * 40 and len(batch) == len(docs) * 40
    readings = [python_reading(line, "text") for line in lines * 40]
    expected_bad = [(i, r) for i, r in enumerate(readings) if r[0] not in ("text", "blank")]
    assert [(index, kind) for _, index, kind, _ in bad] == [(i, r[0]) for i, r in expected_bad]
    before = [sum(r[0] == "text" for r in readings[:i]) for i, _ in expected_bad]
    assert [position for position, *_ in bad] == before
    utf8 = next(detail for _, index, kind, detail in bad if kind == "utf8")
    assert block[utf8] == 0xE9
