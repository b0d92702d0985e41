"""smallgpt.evaluate: sliding-window loss/perplexity/bits per byte against a per-token loop,
perplexity of padded batches, BLEU against a from-scratch BLEU, and the command line."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from smallgpt.data.datasets import TextDataset
from smallgpt.data.shards import prepare_shards
from smallgpt.evaluate.bleu import compute_bleu_score, corpus_bleu
from smallgpt.evaluate.cli import main
from smallgpt.evaluate.lm import TextWindows, compute_perplexity, evaluate_checkpoint, evaluate_lm
from torch.utils.data import DataLoader

from tests.eval_helpers import (  # noqa: F401 (one_torch_thread is a fixture)
    one_torch_thread,
    shakespeare,
    tiny_checkpoint,
    tiny_model,
    tiny_tokenizer,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer, model):
    return tiny_checkpoint(tmp_path_factory.mktemp("ck") / "step_1", tokenizer, model)


def per_token_nll(model, ids: list[int], seq_len: int, stride: int) -> tuple[float, int]:
    """Brute force: token i (i >= 1) is scored in the first window [k*stride, k*stride+seq_len)
    that contains it, with that window's tokens before it as context; one forward per token."""
    total = 0.0
    for i in range(1, len(ids)):
        k = max(0, math.ceil((i - seq_len + 1) / stride))
        start = k * stride
        if k > 0:
            assert i - start >= seq_len - stride  # every later token keeps this much context
        context = torch.tensor([ids[start : i + 1]])
        with torch.no_grad():
            logits = model(context)[0, -2]
        total -= F.log_softmax(logits.double(), dim=-1)[ids[i]].item()
    return total, len(ids) - 1


@pytest.mark.parametrize("seq_len, stride", [(16, 15), (16, 8), (16, 1), (8, 3)])
def test_sliding_windows_score_each_token_once_like_a_per_token_loop(tokenizer, seq_len, stride):
    model = tiny_model(tokenizer, max_seq_len=seq_len, seed=3)
    text = shakespeare(300, start=5000)
    ids = tokenizer.encode(text)
    windows = TextWindows(np.array(ids), seq_len, stride, tokenizer.pad_token_id)
    lengths = torch.tensor([len(tokenizer.id_to_bytes(i)) for i in range(tokenizer.vocab_size)])
    result = evaluate_lm(model, DataLoader(windows, batch_size=3), byte_lengths=lengths)
    nats, count = per_token_nll(model, ids, seq_len, stride)
    assert result.tokens == count
    assert result.loss == pytest.approx(nats / count, rel=1e-5)
    assert result.num_bytes == len(tokenizer.decode_bytes(ids[1:]))
    expected_bpb = nats / math.log(2) / len(tokenizer.decode_bytes(ids[1:]))
    assert result.bits_per_byte == pytest.approx(expected_bpb, rel=1e-5)


def unpadded_mean_nll(model, dataset) -> float:
    """Mean next-token loss of each window's real tokens, one unpadded sequence at a time."""
    nats, count = 0.0, 0
    for item in dataset:
        real = int(item["attention_mask"].sum())
        ids = item["input_ids"][:real]
        with torch.no_grad():
            logits = model(ids[None])[0, :-1]
        nats += F.cross_entropy(logits.double(), ids[1:], reduction="sum").item()
        count += real - 1
    return nats / count


def test_perplexity_of_padded_batches_counts_only_real_tokens(tokenizer):
    # The guide's model has no pad id: padding must be left out through the attention mask.
    model = tiny_model(tokenizer, pad=False)
    texts = [shakespeare(200), shakespeare(90, start=700), shakespeare(40, start=2000)]
    dataset = TextDataset(texts, tokenizer, max_seq_len=16, stride=11)
    assert int(dataset[len(dataset) - 1]["attention_mask"].sum()) < 16  # the last one is padded
    expected = math.exp(unpadded_mean_nll(model, dataset))
    loader = DataLoader(dataset, batch_size=4)
    assert compute_perplexity(model, loader) == pytest.approx(expected, rel=1e-5)
    pairs = [
        (b["input_ids"], b["labels"].masked_fill(b["attention_mask"] == 0, -100)) for b in loader
    ]
    assert compute_perplexity(model, pairs) == pytest.approx(expected, rel=1e-5)


def test_perplexity_restores_training_mode_and_rejects_empty_input(tokenizer):
    model = tiny_model(tokenizer).train()
    batch = {"input_ids": torch.tensor([tokenizer.encode("To be, or not to be")])}
    assert math.isfinite(compute_perplexity(model, [batch])) and model.training
    with pytest.raises(ValueError, match="no token was scored"):
        compute_perplexity(model, [])
    with pytest.raises(TypeError, match="input_ids"):
        compute_perplexity(model, [{"labels": batch["input_ids"]}])


def test_checkpoint_evaluation_of_shards_scores_the_whole_validation_split(
    tmp_path, tokenizer, model, checkpoint
):
    source = tmp_path / "text.txt"
    source.write_text(shakespeare(6000, start=30_000), encoding="utf-8")
    meta = prepare_shards(
        tokenizer, [source], tmp_path / "shards", val_fraction=0.2, show_progress=False
    )
    val_ids = np.fromfile(tmp_path / "shards" / "val.bin", dtype=np.uint16).tolist()
    result = evaluate_checkpoint(
        checkpoint, tmp_path / "shards", seq_len=16, stride=12, progress=False, device="cpu"
    )
    assert result["tokens"] == meta["splits"]["val"]["tokens"] - 1
    # prepare_shards counts the split's text bytes; the first token is context only.
    first = len(tokenizer.id_to_bytes(val_ids[0]))
    assert result["bytes"] == meta["splits"]["val"]["text_bytes"] - first
    nats, _ = per_token_nll(model, val_ids, 16, 12)
    assert result["loss"] == pytest.approx(nats / result["tokens"], rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))


def test_shards_of_another_tokenizer_are_refused(tmp_path, checkpoint):
    source = tmp_path / "text.txt"
    source.write_text(shakespeare(3000), encoding="utf-8")
    other = tiny_tokenizer(vocab_size=290)
    prepare_shards(other, [source], tmp_path / "shards", val_fraction=0.5, show_progress=False)
    with pytest.raises(ValueError, match="encoded with another tokenizer"):
        evaluate_checkpoint(checkpoint, tmp_path / "shards", progress=False)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_equals_the_function_and_the_bare_form_is_lm(tmp_path, capsys, checkpoint):
    text = tmp_path / "eval.txt"
    text.write_text(shakespeare(1500, start=9000), encoding="utf-8")
    args = ["--checkpoint", checkpoint, "--data", text, "--stride", 5, "--batch-size", 2]
    code, out, _ = run_cli(capsys, "lm", *args, "--json", "--quiet")
    assert code == 0
    reported = json.loads(out)
    expected = evaluate_checkpoint(checkpoint, text, stride=5, batch_size=2, progress=False)
    assert reported == pytest.approx(expected)
    assert reported["seq_len"] == 16 and reported["windows"] > 1
    code, bare, _ = run_cli(capsys, *args, "--json", "--quiet")
    assert code == 0 and json.loads(bare) == reported
    code, human, err = run_cli(capsys, *args)
    assert code == 0 and "evaluating" in err  # the progress bar
    assert f"perplexity {reported['perplexity']:.3f}" in human
    assert f"bits per byte {reported['bits_per_byte']:.4f}" in human


def test_cli_errors_name_the_problem(tmp_path, capsys, checkpoint):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"abc\xff\xfe\x00" * 20)
    text = tmp_path / "ok.txt"
    text.write_text(shakespeare(500))
    cases = [
        (["--checkpoint", tmp_path / "nowhere", "--data", text], "does not exist"),
        (["--checkpoint", tmp_path, "--data", text], "holds no checkpoint"),
        (["--checkpoint", checkpoint, "--data", tmp_path / "missing.txt"], "no such file"),
        (["--checkpoint", checkpoint, "--data", empty], "0 token"),
        (["--checkpoint", checkpoint, "--data", binary], "UTF-8"),
        (["--checkpoint", checkpoint, "--data", text, "--seq-len", 64], "max_seq_len=16"),
        (["--checkpoint", checkpoint, "--data", text, "--stride", 16], "stride must be in"),
        (["--checkpoint", checkpoint, "--data", text, "--batch-size", 0], "batch_size"),
        (["--checkpoint", checkpoint, "--data", tmp_path], "meta.json"),
    ]
    for args, message in cases:
        code, out, err = run_cli(capsys, "lm", *args, "--quiet")
        assert code == 1 and out == "", args
        assert err.startswith("error: ") and message in err, (args, err)


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def reference_bleu(refs: list[str], hyps: list[str], effective_order: bool = False) -> float:
    """BLEU from its definition (Papineni et al. 2002) on whitespace words, with NIST "exp"
    smoothing: the k-th order without matches gets precision 1 / (2^k * total); no match of
    any order at all is BLEU 0."""
    correct, total = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        r, h = ref.split(), hyp.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, 5):
            hc, rc = ngrams(h, n), ngrams(r, n)
            correct[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    if not any(correct):
        return 0.0
    logs, k = [], 1
    for c, t in zip(correct, total):
        if t == 0 and effective_order:
            continue
        if c == 0:
            k *= 2
            logs.append(math.log(1 / (k * t)))
        else:
            logs.append(math.log(c / t))
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * brevity * math.exp(sum(logs) / len(logs))


REFS = [
    "the cat sat on the mat by the door",
    "a quick brown fox jumps over the lazy dog",
    "to be or not to be that is the question",
]
HYPS = [
    "the cat sat on a mat by the door",
    "the quick brown fox jumped over the lazy dog",
    "to be or not to be is the question",
]


def test_corpus_bleu_equals_bleu_from_its_definition():
    assert corpus_bleu(REFS, HYPS) == pytest.approx(reference_bleu(REFS, HYPS), rel=1e-9)
    multi = [[r, h] for r, h in zip(REFS, HYPS)]
    assert corpus_bleu(multi, HYPS) == pytest.approx(100.0)


@pytest.mark.parametrize(
    "reference, candidate",
    [
        (REFS[0], HYPS[0]),
        ("the cat sat on the mat", "the cat sat"),  # shorter than 4 words: effective order
        ("the cat sat on the mat", "the mat sat on the cat"),  # no 4-gram match: smoothing
        ("the cat sat on the mat", "dogs bark loudly at night"),  # nothing in common
    ],
)
def test_sentence_bleu_is_smoothed_bleu_on_the_guides_0_to_1_scale(reference, candidate):
    score = compute_bleu_score(reference, candidate)
    assert 0.0 <= score <= 1.0
    # reference_bleu is on sacrebleu's 0-100 scale, as corpus_bleu
    assert score == pytest.approx(
        reference_bleu([reference], [candidate], effective_order=True) / 100, rel=1e-9
    )
    assert compute_bleu_score(reference, reference) == pytest.approx(1.0)


def test_bleu_rejects_mismatched_or_non_text_input():
    with pytest.raises(TypeError, match="reference must be a str"):
        compute_bleu_score(["the", "cat"], "the cat")
    with pytest.raises(ValueError, match="one reference entry per candidate"):
        corpus_bleu(REFS[:2], HYPS)
    with pytest.raises(ValueError, match="same number"):
        corpus_bleu([[REFS[0]], [REFS[1], HYPS[1]], [REFS[2]]], HYPS)
    with pytest.raises(TypeError, match="single str"):
        corpus_bleu(REFS[0], HYPS[0])


def test_bleu_cli_scores_files_line_by_line(tmp_path, capsys):
    refs, hyps = tmp_path / "refs.txt", tmp_path / "hyps.txt"
    refs.write_text("\n".join(REFS) + "\n")
    hyps.write_text("\n".join(HYPS) + "\n")
    code, out, _ = run_cli(capsys, "bleu", "--refs", refs, "--hyps", hyps, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["bleu"] == pytest.approx(corpus_bleu(REFS, HYPS))
    assert report["lines"] == 3 and "smooth:exp" in report["signature"]
    code, out, _ = run_cli(capsys, "bleu", "--refs", refs, "--hyps", hyps)
    assert code == 0 and out.startswith(f"BLEU {report['bleu']:.2f} (0-100)")
    hyps.write_text(HYPS[0] + "\n")
    code, _, err = run_cli(capsys, "bleu", "--refs", refs, "--hyps", hyps)
    assert code == 1 and "has 3 lines but" in err
