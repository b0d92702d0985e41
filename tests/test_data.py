"""Token data: windows, shards and batch streams checked against plain tokenizer.encode and slicing."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from smallgpt.data.datasets import RandomWindowBatches, TextDataset, TokenShardDataset
from smallgpt.data.shards import bytes_per_token, load_meta, prepare_shards
from smallgpt.tokenizer.bpe import Tokenizer
from torch.utils.data import DataLoader


@pytest.fixture(scope="module")
def texts(shared_data) -> dict[str, str]:
    """Small real documents: English prose, and multilingual text with emoji (multi-byte UTF-8)."""
    return {
        "shakespeare.txt": (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")[
            :60_000
        ],
        "multilingual.txt": (shared_data / "multilingual_emoji.txt").read_text(encoding="utf-8")[
            :20_000
        ],
    }


@pytest.fixture(scope="module")
def tokenizer(texts) -> Tokenizer:
    return Tokenizer.train(list(texts.values()), vocab_size=400)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, texts, tokenizer):
    root = tmp_path_factory.mktemp("shards")
    paths = []
    for name, text in texts.items():
        (root / name).write_text(text, encoding="utf-8")
        paths.append(root / name)
    meta = prepare_shards(tokenizer, paths, root / "out", val_fraction=0.05, show_progress=False)
    return root / "out", meta, paths


def expected_splits(tokenizer, texts, val_fraction):
    train, val = [], []
    for text in texts:
        ids = tokenizer.encode(text)
        cut = len(ids) - math.ceil(len(ids) * val_fraction)
        train += ids[:cut] + [tokenizer.eos_token_id]
        val += ids[cut:] + [tokenizer.eos_token_id]
    return train, val


def test_text_dataset_windows_are_strided_slices_of_the_eos_joined_stream(tokenizer):
    docs = ["First document, short.", "Second one is a little longer than the first.", "3rd"]
    stream = tokenizer.encode(docs[0])
    for doc in docs[1:]:
        stream += [tokenizer.eos_token_id] + tokenizer.encode(doc)
    dataset = TextDataset(docs, tokenizer, max_seq_len=8, stride=3)
    starts = list(range(0, len(stream) - 8, 3))
    starts.append(starts[-1] + 3)
    assert len(dataset) == len(starts)
    for index, start in enumerate(starts):
        item = dataset[index]
        window = stream[start : start + 8]
        pad = [tokenizer.pad_token_id] * (8 - len(window))
        assert item["input_ids"].tolist() == window + pad
        assert item["labels"].tolist() == window + pad
        assert item["attention_mask"].tolist() == [1] * len(window) + [0] * len(pad)
    assert (
        stream[-1]
        == dataset[len(dataset) - 1]["input_ids"][dataset[-1]["attention_mask"].sum() - 1]
    )


def test_text_dataset_batches_through_a_dataloader(tokenizer, texts):
    dataset = TextDataset(list(texts.values()), tokenizer, max_seq_len=64, stride=32)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["input_ids"].shape == (4, 64) and batch["input_ids"].dtype == torch.long


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((["a"],), {"max_seq_len": 8, "stride": 0}),
        ((["a"],), {"max_seq_len": 8, "stride": 9}),
        ((["a"],), {"max_seq_len": 1, "stride": 1}),
        (([""],), {"max_seq_len": 8, "stride": 4}),
    ],
)
def test_text_dataset_rejects_bad_sizes_and_empty_text(tokenizer, args, error):
    with pytest.raises(ValueError):
        TextDataset(*args, tokenizer, **error)


def test_text_dataset_rejects_a_bare_string(tokenizer):
    with pytest.raises(TypeError, match="sequence of str"):
        TextDataset("just one text", tokenizer)


def test_shards_hold_each_files_tokens_split_train_then_val_with_eos(shards, tokenizer, texts):
    out, meta, _ = shards
    train, val = expected_splits(tokenizer, texts.values(), 0.05)
    assert meta["dtype"] == "uint16"
    assert np.fromfile(out / "train.bin", dtype=np.uint16).tolist() == train
    assert np.fromfile(out / "val.bin", dtype=np.uint16).tolist() == val
    assert meta["splits"]["train"]["tokens"] == len(train)
    assert meta["splits"]["val"]["tokens"] == len(val)


def test_meta_records_text_bytes_tokenizer_hash_and_sources(shards, tokenizer, texts):
    out, meta, paths = shards
    _, val = expected_splits(tokenizer, texts.values(), 0.05)
    val_text = tokenizer.decode_bytes([i for i in val if i != tokenizer.eos_token_id])
    assert meta["splits"]["val"]["text_bytes"] == len(val_text)
    total = sum(len(t.encode("utf-8")) for t in texts.values())
    assert meta["splits"]["train"]["text_bytes"] + meta["splits"]["val"]["text_bytes"] == total
    digest = hashlib.sha256((out / meta["tokenizer_file"]).read_bytes()).hexdigest()
    assert meta["tokenizer_sha256"] == digest
    assert Tokenizer.load(out / meta["tokenizer_file"]).encode("Hello") == tokenizer.encode("Hello")
    assert [s["path"] for s in meta["sources"]] == [str(p.resolve()) for p in paths]
    assert load_meta(out) == meta
    split = meta["splits"]["val"]
    assert bytes_per_token(out) == pytest.approx(split["text_bytes"] / split["tokens"])


def test_prepare_cli_writes_the_same_shards(tmp_path, shards, tokenizer):
    out, meta, paths = shards
    tokenizer.save(tmp_path / "tok.json")
    cmd = [
        sys.executable,
        "-m",
        "smallgpt.data",
        "prepare",
        "--tokenizer",
        str(tmp_path / "tok.json"),
    ]
    cmd += ["--input", *map(str, paths), "--out", str(tmp_path / "cli"), "--val-fraction", "0.05"]
    subprocess.run(cmd + ["--quiet"], check=True, capture_output=True)
    assert (tmp_path / "cli" / "train.bin").read_bytes() == (out / "train.bin").read_bytes()
    assert load_meta(tmp_path / "cli")["splits"] == meta["splits"]


def test_splitting_in_small_chunks_gives_the_same_shards(tmp_path, monkeypatch, shards, tokenizer):
    out, meta, paths = shards
    monkeypatch.setattr("smallgpt.data.shards._COPY_CHUNK", 7)
    small = prepare_shards(tokenizer, paths, tmp_path, val_fraction=0.05, show_progress=False)
    assert small["splits"] == meta["splits"]
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()


def test_empty_files_add_no_tokens_and_no_separator(tmp_path, tokenizer):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "text.txt").write_text("Some words here.")
    inputs = [tmp_path / "empty.txt", tmp_path / "text.txt"]
    meta = prepare_shards(tokenizer, inputs, tmp_path / "o", val_fraction=0.0, show_progress=False)
    expected = tokenizer.encode("Some words here.") + [tokenizer.eos_token_id]
    assert np.fromfile(tmp_path / "o" / "train.bin", dtype=np.uint16).tolist() == expected
    assert meta["splits"]["val"]["tokens"] == 0
    assert [s["tokens"] for s in meta["sources"]] == [0, len(expected) - 1]


def test_prepare_rejects_missing_inputs_and_bad_fractions(tmp_path, tokenizer, shards):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        prepare_shards(tokenizer, [tmp_path / "nope.txt"], tmp_path / "o", show_progress=False)
    with pytest.raises(ValueError, match="val_fraction"):
        prepare_shards(tokenizer, shards[2], tmp_path / "o", val_fraction=1.0, show_progress=False)
    with pytest.raises(ValueError, match="at least one"):
        prepare_shards(tokenizer, [], tmp_path / "o", show_progress=False)


def test_load_meta_detects_missing_stale_and_foreign_shards(tmp_path, shards):
    out, meta, _ = shards
    with pytest.raises(FileNotFoundError, match="meta.json"):
        load_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(ValueError, match="version"):
        load_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format"):
        load_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "train.bin").write_bytes((out / "train.bin").read_bytes()[:-2])
    (tmp_path / "val.bin").write_bytes((out / "val.bin").read_bytes())
    with pytest.raises(ValueError, match="train.bin"):
        load_meta(tmp_path)


@pytest.mark.parametrize(("seq_len", "stride"), [(32, None), (32, 8), (5, 4)])
def test_evaluation_windows_score_every_token_but_the_first_exactly_once(shards, seq_len, stride):
    out, _, _ = shards
    tokens = np.fromfile(out / "val.bin", dtype=np.uint16).astype(np.int64)
    dataset = TokenShardDataset(out, "val", seq_len, stride)
    stride = seq_len - 1 if stride is None else stride
    scored = []
    for index in range(len(dataset)):
        item = dataset[index]
        start, real = index * stride, int(item["attention_mask"].sum())
        assert item["input_ids"][:real].tolist() == tokens[start : start + real].tolist()
        positions = torch.nonzero(item["labels"][1:] != -100).flatten() + 1
        assert item["labels"][positions].tolist() == tokens[start + positions.numpy()].tolist()
        scored += (start + positions).tolist()
    assert scored == list(range(1, len(tokens)))


def test_evaluation_dataset_works_with_workers_and_pickles_without_its_memmap(shards):
    out, _, _ = shards
    dataset = TokenShardDataset(out, "val", 64)
    dataset[0]  # maps the file in this process
    assert len(pickle.dumps(dataset)) < 10_000
    serial = [b["labels"] for b in DataLoader(dataset, batch_size=3)]
    parallel = [b["labels"] for b in DataLoader(dataset, batch_size=3, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))


def test_random_batches_are_contiguous_windows_of_the_split(shards):
    out, _, _ = shards
    tokens = np.fromfile(out / "train.bin", dtype=np.uint16).astype(np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(tokens, 16)
    batches = RandomWindowBatches(out, seq_len=16, batch_size=4, seed=1)
    for _ in range(3):
        input_ids, labels = batches.next_batch()
        assert input_ids.shape == (4, 16) and input_ids.dtype == torch.long
        assert torch.equal(input_ids, labels)
        for row in input_ids.numpy():
            assert (windows == row).all(axis=1).any()


def test_random_batches_resume_exactly_from_state_dict(shards):
    out, _, _ = shards
    uninterrupted = RandomWindowBatches(out, seq_len=16, batch_size=4, seed=7)
    reference = [uninterrupted.next_batch()[0] for _ in range(6)]
    first = RandomWindowBatches(out, seq_len=16, batch_size=4, seed=7)
    for _ in range(3):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))
    resumed = RandomWindowBatches(out, seq_len=16, batch_size=4, seed=7)
    resumed.load_state_dict(state)
    assert all(torch.equal(resumed.next_batch()[0], ref) for ref in reference[3:])
    other_seed = RandomWindowBatches(out, seq_len=16, batch_size=4, seed=8)
    assert not torch.equal(other_seed.next_batch()[0], reference[0])
    with pytest.raises(ValueError, match="seed"):
        other_seed.load_state_dict(state)


def test_ranks_draw_disjoint_parts_of_one_global_batch(shards):
    out, _, _ = shards
    whole = RandomWindowBatches(out, seq_len=16, batch_size=6, seed=3)
    parts = [
        RandomWindowBatches(out, seq_len=16, batch_size=3, seed=3, rank=r, world_size=2)
        for r in (0, 1)
    ]
    for _ in range(2):
        assert torch.equal(whole.next_batch()[0], torch.cat([p.next_batch()[0] for p in parts]))


def test_shard_readers_reject_bad_arguments(shards):
    out, meta, _ = shards
    with pytest.raises(ValueError, match="rank"):
        RandomWindowBatches(out, seq_len=16, batch_size=2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        RandomWindowBatches(out, "val", seq_len=meta["splits"]["val"]["tokens"] + 1, batch_size=1)
    with pytest.raises(ValueError, match="split"):
        TokenShardDataset(out, "test", 16)
    with pytest.raises(ValueError, match="stride"):
        TokenShardDataset(out, "val", 16, stride=16)
