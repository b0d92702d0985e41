"""Preparing shards from real corpora: every form of the same documents gives the same shards,
checked against plain `tokenizer.encode` of each document; whole documents are held out for
validation; a run killed with SIGKILL resumes to byte-identical shards; memory stays bounded."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from smallgpt.config.schema import DataSection
from smallgpt.data import shards
from smallgpt.data.cli import main as data_cli
from smallgpt.data.prepare import prepare_data
from smallgpt.data.shards import STATE_FILE, held_out, load_meta, prepare_shards
from smallgpt.tokenizer.bpe import Tokenizer
from smallgpt.tokenizer.cli import main as tokenizer_cli
from tqdm import tqdm

from tests.corpora import (
    FORMS,
    sample_documents,
    write_bytes,
    write_form,
    write_jsonl,
    write_text_dir,
)

pytest.importorskip("pyarrow")
pytest.importorskip("zstandard")

MASK = (1 << 64) - 1


def splitmix_held_out(seed: int, source: int, doc: int, val_fraction: float) -> bool:
    """The documented rule of `held_out`, in plain Python integers (the reference)."""
    key = (seed * 0x9E3779B97F4A7C15 + source * 0xD1B54A32D192ED03) & MASK
    x = (doc + key) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    x ^= x >> 31
    return (x >> 11) / 2.0**53 < val_fraction


def reference_records(tokenizer, docs, val_fraction, seed=0, source=0):
    """Train and val ids of a file of records: whole documents, each followed by eos."""
    splits = {"train": [], "val": []}
    for number, doc in enumerate(docs):
        ids = tokenizer.encode(doc)
        if ids:
            held = splitmix_held_out(seed, source, number, val_fraction)
            splits["val" if held else "train"] += ids + [tokenizer.eos_token_id]
    return splits


def shard_ids(out: Path) -> dict[str, list[int]]:
    return {
        name: np.fromfile(out / f"{name}.bin", dtype=np.uint16).tolist()
        for name in ("train", "val")
    }


def shard_bytes(out: Path) -> tuple[bytes, bytes]:
    return (out / "train.bin").read_bytes(), (out / "val.bin").read_bytes()


@pytest.fixture(scope="module")
def docs(shared_data) -> list[str]:
    return sample_documents(shared_data)


@pytest.fixture(scope="module")
def many_docs(shared_data) -> list[str]:
    """600 paragraphs of Gutenberg books: enough documents to see the held-out fraction."""
    text = (shared_data / "gutenberg_en_10mb.txt").read_text(encoding="utf-8")[:400_000]
    return [p for p in text.split("\n\n") if p.strip()][:600]


@pytest.fixture(scope="module")
def tokenizer(docs, many_docs) -> Tokenizer:
    return Tokenizer.train(docs + many_docs, vocab_size=400)


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory, tokenizer) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tok.json"
    tokenizer.save(path)
    return path


def prepare(tokenizer, inputs, out, **options):
    return prepare_shards(
        tokenizer, inputs, out, show_progress=False, log=lambda _: None, **options
    )


@pytest.mark.parametrize("form", FORMS)
def test_every_form_gives_the_reference_shards(tmp_path, docs, tokenizer, form):
    path = write_form(tmp_path, form, docs)
    meta = prepare(tokenizer, [path], tmp_path / "out", val_fraction=0.3)
    expected = reference_records(tokenizer, docs, 0.3)
    assert shard_ids(tmp_path / "out") == expected
    assert expected["val"] and expected["train"]  # both splits are exercised
    assert meta["splits"]["val"]["documents"] == expected["val"].count(tokenizer.eos_token_id)
    assert meta["sources"][0]["documents"] == len(docs)
    assert load_meta(tmp_path / "out") == meta


def test_text_files_of_the_same_documents_give_the_same_training_shard(tmp_path, docs, tokenizer):
    texts = write_text_dir(tmp_path / "texts", docs)
    records = write_jsonl(tmp_path / "docs.jsonl.gz", docs)
    prepare(tokenizer, [texts], tmp_path / "a", val_fraction=0.0)
    prepare(tokenizer, [records], tmp_path / "b", val_fraction=0.0)
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
    assert shard_ids(tmp_path / "a")["train"] == reference_records(tokenizer, docs, 0.0)["train"]


def test_validation_holds_out_a_seeded_sample_of_whole_documents(tmp_path, many_docs, tokenizer):
    path = write_jsonl(tmp_path / "many.jsonl", many_docs)
    held = {}
    for seed in (0, 1):
        prepare(tokenizer, [path], tmp_path / f"s{seed}", val_fraction=0.1, split_seed=seed)
        ids = shard_ids(tmp_path / f"s{seed}")
        val = np.array(ids["val"])
        ends = np.flatnonzero(val == tokenizer.eos_token_id)
        pieces = np.split(val, ends[:-1] + 1)
        texts = [tokenizer.decode(p[:-1].tolist()) for p in pieces]
        assert set(texts) <= set(many_docs)  # whole documents, not the tails of documents
        held[seed] = [i for i, d in enumerate(many_docs) if d in set(texts)]
        assert 30 <= len(held[seed]) <= 90  # 10 % of 600, binomial sd ~7.3
        assert ids == reference_records(tokenizer, many_docs, 0.1, seed=seed)
    assert held[0] != held[1]
    numbers = np.arange(600, dtype=np.uint64)
    assert held_out(0, 0, numbers, 0.1).tolist() == [
        splitmix_held_out(0, 0, d, 0.1) for d in range(600)
    ]


def test_long_text_documents_in_many_pieces_give_the_same_shards(
    tmp_path, monkeypatch, shared_data, docs, tokenizer
):
    book = (shared_data / "gutenberg_en_10mb.txt").read_text(encoding="utf-8")[:120_000]
    inputs = [
        write_bytes(tmp_path / "book.txt.gz", book.encode("utf-8")),
        write_jsonl(tmp_path / "docs.jsonl", docs),
        write_bytes(tmp_path / "again.txt", book[:50_000].encode("utf-8")),
    ]
    whole = prepare(tokenizer, inputs, tmp_path / "whole", val_fraction=0.2)
    monkeypatch.setattr("smallgpt.data.shards._CHUNK_CHARS", 9_000)
    monkeypatch.setattr("smallgpt.data.shards._PIECE_CHARS", 2_000)
    monkeypatch.setattr("smallgpt.data.shards._RECORD_BYTES", 2_000)
    monkeypatch.setattr("smallgpt.data.shards._COPY_CHUNK", 777)
    pieces = prepare(tokenizer, inputs, tmp_path / "pieces", val_fraction=0.2)
    assert shard_bytes(tmp_path / "whole") == shard_bytes(tmp_path / "pieces")
    assert pieces["splits"] == whole["splits"]
    expected = {"train": [], "val": []}
    for source, text in ((0, book), (2, book[:50_000])):
        ids = tokenizer.encode(text)
        cut = len(ids) - int(np.ceil(len(ids) * 0.2))
        part = {
            "train": ids[:cut] + [tokenizer.eos_token_id],
            "val": ids[cut:] + [tokenizer.eos_token_id],
        }
        if source == 0:
            records = reference_records(tokenizer, docs, 0.2, source=1)
            expected = {k: part[k] + records[k] for k in part}
        else:
            expected = {k: expected[k] + part[k] for k in part}
    assert shard_ids(tmp_path / "pieces") == expected
    assert not (tmp_path / "pieces" / STATE_FILE).exists()


SMALL_CHUNKS = {"_CHUNK_CHARS": 9_000, "_PIECE_CHARS": 2_000, "_RECORD_BYTES": 2_000}

# Runs prepare_shards with small chunks, killing itself with SIGKILL around the Nth JSON write
# (the state after a chunk, or meta.json at the end); prints the number of writes at the end.
CHILD = """
import os, signal, sys
import smallgpt.data.shards as shards
from smallgpt.tokenizer.bpe import Tokenizer
for name, value in {small}.items():
    setattr(shards, name, value)
kill_at, where, tokenizer, out, *inputs = sys.argv[1:]
calls = 0
write = shards._write_json_atomic
def dying_write(path, data):
    global calls
    calls += 1
    if where == "meta" and path.name == "meta.json" or where == "before" and calls == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
    write(path, data)
    if where == "after" and calls == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
shards._write_json_atomic = dying_write
shards.prepare_shards(Tokenizer.load(tokenizer), inputs, out, val_fraction=0.2, show_progress=False)
print("writes", calls)
""".replace("{small}", repr(SMALL_CHUNKS))


def run_child(kill_at: int, where: str, tokenizer_file: Path, out: Path, inputs: list[Path]):
    args = [str(kill_at), where, str(tokenizer_file), str(out), *map(str, inputs)]
    return subprocess.run(
        [sys.executable, "-c", CHILD, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def kill_corpus(tmp_path_factory, shared_data, docs, tokenizer):
    """Inputs of many chunks (a long text document among them) and their shards, prepared in
    this process in the child's chunks, with the number of JSON writes that took."""
    root = tmp_path_factory.mktemp("kill")
    book = (shared_data / "gutenberg_en_10mb.txt").read_text(encoding="utf-8")
    inputs = [
        write_jsonl(root / "a.jsonl.gz", docs),
        write_bytes(root / "book.txt", book[:40_000].encode("utf-8")),
        write_jsonl(root / "b.jsonl.zst", [p for p in book[40_000:90_000].split("\n\n") if p]),
    ]
    writes = prepare_small(tokenizer, inputs, root / "whole")
    return inputs, shard_bytes(root / "whole"), writes


def prepare_small(tokenizer, inputs, out) -> int:
    """prepare_shards in the child's chunk sizes; returns its number of JSON writes."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SMALL_CHUNKS.items():
            patch.setattr(f"smallgpt.data.shards.{name}", value)
        calls = []
        write = shards._write_json_atomic
        patch.setattr(shards, "_write_json_atomic", lambda *a: calls.append(1) or write(*a))
        prepare(tokenizer, inputs, out, val_fraction=0.2)
    return len(calls)


@pytest.mark.slow
def test_a_preparation_killed_again_and_again_resumes_to_identical_shards(
    tmp_path, tokenizer_file, kill_corpus
):
    inputs, expected, full_writes = kill_corpus
    out = tmp_path / "out"
    kills = [
        (1, "before"),  # before the first state: nothing to resume
        (3, "after"),  # just after a chunk's state was saved
        (2, "before"),  # a chunk's tokens written, its state not
        (0, "meta"),  # the shards renamed into place, meta.json not written yet
    ]
    for kill_at, where in kills:
        killed = run_child(kill_at, where, tokenizer_file, out, inputs)
        assert killed.returncode == -9, killed.stderr
        with pytest.raises(FileNotFoundError, match="meta.json"):
            load_meta(out)  # nothing half-written passes for finished shards
        if where != "meta":
            assert not (out / "train.bin").exists()
    done = run_child(0, "never", tokenizer_file, out, inputs)
    assert done.returncode == 0, done.stderr
    assert "resuming the preparation" in done.stderr
    assert int(done.stdout.split()[-1]) < full_writes  # finished chunks were not redone
    assert shard_bytes(out) == expected
    assert load_meta(out)["splits"]["train"]["tokens"] * 2 == len(expected[0])
    assert sorted(p.name for p in out.iterdir()) == [
        "meta.json",
        "tokenizer.json",
        "train.bin",
        "val.bin",
    ]


@pytest.mark.slow
def test_changed_inputs_start_over_and_say_why(
    tmp_path, tokenizer, tokenizer_file, kill_corpus, docs
):
    inputs, _, _ = kill_corpus
    changed = [tmp_path / p.name for p in inputs]
    for source, target in zip(inputs, changed, strict=True):
        target.write_bytes(source.read_bytes())
    killed = run_child(3, "after", tokenizer_file, tmp_path / "out", changed)
    assert killed.returncode == -9
    write_jsonl(changed[0], docs[:-1])
    done = run_child(0, "never", tokenizer_file, tmp_path / "out", changed)
    assert done.returncode == 0, done.stderr
    assert f"over: input {changed[0].resolve()} changed" in done.stderr
    prepare_small(tokenizer, changed, tmp_path / "fresh")
    assert shard_bytes(tmp_path / "out") == shard_bytes(tmp_path / "fresh")


def test_the_trainer_data_step_reads_records_and_trains_the_same_tokenizer(tmp_path, docs):
    forms = {
        "jsonl": [str(write_jsonl(tmp_path / "docs.jsonl.gz", docs))],
        "parquet": [str(write_form(tmp_path, "parquet", docs))],
    }
    prepared = {}
    for name, files in forms.items():
        section = DataSection(text_files=files, tokenizer_vocab_size=300, val_fraction=0.3)
        prepared[name] = prepare_data(section, tmp_path / name, show_progress=False)
    assert shard_bytes(prepared["jsonl"].shard_dir) == shard_bytes(prepared["parquet"].shard_dir)
    reference = Tokenizer.train(docs, vocab_size=300)
    assert prepared["jsonl"].tokenizer.to_json() == reference.to_json()
    expected = reference_records(reference, docs, 0.3)
    assert shard_ids(prepared["parquet"].shard_dir) == expected
    again = prepare_data(section, tmp_path / "parquet", show_progress=False)
    assert again.meta == prepared["parquet"].meta  # reused, not prepared again


def test_the_tokenizer_trained_from_records_equals_the_one_from_text_files(tmp_path, docs):
    texts = write_text_dir(tmp_path / "texts", docs)
    from_texts = Tokenizer.train_files([texts], vocab_size=350)
    assert from_texts.to_json() == Tokenizer.train(docs, vocab_size=350).to_json()
    for form in ("jsonl.zst", "parquet"):
        from_records = Tokenizer.train_files(write_form(tmp_path, form, docs), vocab_size=350)
        assert from_records.to_json() == from_texts.to_json(), form


def test_the_tokenizer_cli_trains_from_records_with_another_field(tmp_path, docs):
    path = write_jsonl(tmp_path / "docs.jsonl.bz2", docs, field="body")
    argv = ["train", "--input", str(path), "--vocab-size", "300"]
    assert tokenizer_cli([*argv, "--out", str(tmp_path / "tok.json"), "--text-field", "body"]) == 0
    trained = Tokenizer.load(tmp_path / "tok.json")
    assert trained.to_json() == Tokenizer.train(docs, vocab_size=300).to_json()


def test_the_tokenizer_cli_encodes_records_like_text_files_of_the_same_documents(
    tmp_path, docs, tokenizer, tokenizer_file
):
    texts = write_text_dir(tmp_path / "texts", docs)
    records = write_jsonl(tmp_path / "docs.jsonl.zst", docs, field="body")
    encode = ["encode", "--tokenizer", str(tokenizer_file), "--quiet", "--out"]
    assert tokenizer_cli([*encode, str(tmp_path / "t.bin"), "--input", str(texts)]) == 0
    argv = [*encode, str(tmp_path / "r.bin"), "--input", str(records), "--text-field", "body"]
    assert tokenizer_cli(argv) == 0
    from_records = (tmp_path / "r.bin").read_bytes()
    assert from_records == (tmp_path / "t.bin").read_bytes()
    expected = [i for doc in docs for i in tokenizer.encode(doc)]
    assert np.frombuffer(from_records, dtype=np.uint16).tolist() == expected


def test_the_tokenizer_cli_names_the_bad_record_and_skips_it_on_request(
    tmp_path, capsys, docs, tokenizer, tokenizer_file
):
    path = write_jsonl(tmp_path / "docs.jsonl.gz", docs)
    path.write_bytes(path.read_bytes() + gzip.compress(b'{"text": ["a list"]}\n'))
    out = tmp_path / "ids.bin"
    encode = ["encode", "--tokenizer", str(tokenizer_file), "--input", str(path), "--quiet"]
    assert tokenizer_cli([*encode, "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert f"{path}:line {len(docs) + 1}: field 'text' is list, not a string" in error
    assert not out.exists()  # nothing half-written is left behind
    assert tokenizer_cli([*encode, "--out", str(out), "--skip-bad-records"]) == 0
    assert "skipped 1 bad records" in capsys.readouterr().out
    expected = [i for doc in docs for i in tokenizer.encode(doc)]
    assert np.fromfile(out, dtype=np.uint16).tolist() == expected
    train = ["train", "--input", str(path), "--vocab-size", "300", "--out", str(tmp_path / "t")]
    assert tokenizer_cli(train) == 1
    assert f"{path}:line {len(docs) + 1}: field 'text' is list" in capsys.readouterr().err
    assert tokenizer_cli([*train, "--skip-bad-records"]) == 0
    trained = Tokenizer.load(tmp_path / "t")
    assert trained.to_json() == Tokenizer.train(docs, vocab_size=300).to_json()


def test_the_prepare_cli_reports_bad_records_and_skips_them_on_request(
    tmp_path, capsys, docs, tokenizer_file
):
    path = tmp_path / "docs.jsonl"
    write_jsonl(path, docs, field="body")
    path.write_bytes(path.read_bytes() + b'{"body": 7}\n')
    argv = ["prepare", "--tokenizer", str(tokenizer_file), "--input", str(path)]
    argv += ["--out", str(tmp_path / "out"), "--text-field", "body", "--quiet"]
    assert data_cli(argv) == 1
    error = capsys.readouterr().err
    assert f"{path}:line {len(docs) + 1}: field 'body' is int, not a string" in error
    assert "--skip-bad-records" in error
    assert data_cli([*argv, "--skip-bad-records"]) == 0
    assert "skipped 1 bad records" in capsys.readouterr().out
    assert load_meta(tmp_path / "out")["skipped_records"] == 1
    expected = reference_records(Tokenizer.load(tokenizer_file), docs, 0.01)
    assert shard_ids(tmp_path / "out") == expected


# Peak RSS (VmHWM) of a child preparing a JSONL corpus in 1 MiB chunks, over its RSS before
# (imports and the tokenizer loaded), in MB.
RSS_CHILD = """
import sys
import smallgpt.data.shards as shards
from smallgpt.tokenizer.bpe import Tokenizer
def status(key):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key)).split()[1]) / 1024
shards._CHUNK_CHARS = 1 << 20
shards._RECORD_BYTES = 1 << 18
tokenizer = Tokenizer.load(sys.argv[1])
before = status("VmRSS:")
shards.prepare_shards(tokenizer, [sys.argv[3]], sys.argv[2], show_progress=False)
print(status("VmHWM:") - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_memory_stays_bounded_whatever_the_corpus_size(tmp_path, shared_data, tokenizer_file):
    text = (shared_data / "gutenberg_en_10mb.txt").read_text(encoding="utf-8")
    lines = [json.dumps({"text": p}) + "\n" for p in text.split("\n\n") if p]
    growth = {}
    for megabytes in (4, 20):
        corpus = tmp_path / f"{megabytes}.jsonl"
        with corpus.open("w", encoding="utf-8") as f:
            while f.tell() < megabytes << 20:
                f.writelines(lines[:5000])
        args = [str(tokenizer_file), str(tmp_path / f"out{megabytes}"), str(corpus)]
        child = subprocess.run(
            [sys.executable, "-c", RSS_CHILD, *args], check=False, capture_output=True, text=True
        )
        assert child.returncode == 0, child.stderr
        growth[megabytes] = float(child.stdout.split()[-1])
    # At most 4 chunks of 1 MiB of text, their pieces and ids are held: well under 64 MB.
    assert growth[4] < 64, growth
    assert growth[20] < growth[4] + 16, growth  # five times the corpus, no more memory
    sizes = {m: (tmp_path / f"out{m}" / "train.bin").stat().st_size for m in growth}
    assert sizes[20] > 4 * sizes[4]


def test_a_saved_dataset_gives_the_same_shards_as_its_jsonl(tmp_path, docs, tokenizer):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(tmp_path / "ds"))
    meta = prepare(tokenizer, [f"hf:{tmp_path / 'ds'}"], tmp_path / "hf", val_fraction=0.3)
    prepare(
        tokenizer, [write_jsonl(tmp_path / "docs.jsonl", docs)], tmp_path / "j", val_fraction=0.3
    )
    assert shard_bytes(tmp_path / "hf") == shard_bytes(tmp_path / "j")
    assert meta["sources"][0]["path"] == f"hf:{tmp_path / 'ds'}"


def test_the_progress_bar_counts_bytes_and_documents(tmp_path, docs, tokenizer, capsys):
    path = write_jsonl(tmp_path / "docs.jsonl.gz", docs * 3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("smallgpt.data.shards._CHUNK_CHARS", 2_000)
        patch.setattr("smallgpt.data.shards._RECORD_BYTES", 500)
        prepare_shards(tokenizer, [path], tmp_path / "out", log=lambda _: None)
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    size = tqdm.format_sizeof(path.stat().st_size)  # as tqdm shows the file's size
    assert f"{size}/{size}" in bar, bar  # all of it read, out of all of it
    assert f"documents={len(docs) * 3}" in bar, bar
