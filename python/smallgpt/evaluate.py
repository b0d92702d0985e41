"""Evaluation: loss, perplexity and bits per byte of a language model; BLEU of generated text.

Command line (the first word says what is evaluated):

    python -m smallgpt.evaluate lm --checkpoint DIR --data FILE|SHARD_DIR [--split val]
        [--seq-len N] [--stride N] [--batch-size N] [--device auto] [--tokenizer FILE] [--json]
    python -m smallgpt.evaluate bleu --refs FILE [--refs FILE ...] --hyps FILE [--json]

Without a sub-command, `python -m smallgpt.evaluate --checkpoint DIR --data ...` is `lm`.

Language-model evaluation slides windows of `seq_len` tokens over the text, one every `stride`
tokens, and scores every token but the first exactly once, in the first window that reaches it:
past the first window each token sees at least `seq_len - stride` tokens of context. Loss is in
nats per scored token, perplexity is exp(loss), bits per byte is the summed loss in bits divided
by the UTF-8 bytes of the scored tokens (comparable across tokenizers).

BLEU is sacrebleu's, with its default "13a" tokenization and "exp" smoothing (NIST smoothing,
Chen & Cherry 2014 method 3: the k-th n-gram order without any match counts as precision
1 / (2^k * n-grams of that order) instead of 0). `compute_bleu_score` is sentence BLEU (with
effective order: orders longer than the sentence are left out) on the user's guide's 0-1
scale; `corpus_bleu` and the `bleu` command are corpus BLEU over all sentences' n-gram counts
on sacrebleu's 0-100 scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from smallgpt.checkpoint import CheckpointError, unwrap_model
from smallgpt.data import IGNORE_INDEX, TokenShardDataset, _token_byte_lengths, load_meta
from smallgpt.metrics import EvalResult
from smallgpt.model import count_real_tokens

Batch = dict[str, Tensor] | tuple[Tensor, Tensor] | list[Tensor]


# ----------------------------------------------------------------------------- language modelling


def batch_tensors(batch: Batch) -> tuple[Tensor, Tensor]:
    """`(input_ids, labels)` of a batch, labels aligned with input_ids (the model shifts them).

    A batch is a dict from `TextDataset`/`TokenShardDataset` (`input_ids`, optional `labels`,
    optional `attention_mask`) or an `(input_ids, labels)` pair. Positions whose attention_mask
    is 0 (padding) get label -100, so they are never scored even by a model built without a
    pad_token_id. Raises TypeError for anything else.
    """
    if isinstance(batch, dict):
        if "input_ids" not in batch:
            raise TypeError(f"batch dict needs 'input_ids' (has {sorted(batch)})")
        input_ids = batch["input_ids"]
        labels = batch.get("labels", input_ids)
        mask = batch.get("attention_mask")
        if mask is not None:
            labels = labels.masked_fill(mask == 0, IGNORE_INDEX)
        return input_ids, labels
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(
        "a batch must be a dict with input_ids (labels, attention_mask) or an (input_ids, labels) "
        f"pair, not {type(batch).__name__}"
    )


@torch.no_grad()
def evaluate_lm(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    *,
    device: torch.device | str | None = None,
    byte_lengths: Tensor | None = None,
    progress: bool = False,
) -> EvalResult:
    """Summed loss over every scored token of `batches`, as an `EvalResult`.

    A token is scored when its label is neither -100 nor the model's pad id (and its
    attention_mask, if any, is 1); each batch's loss is weighted by its number of scored tokens,
    so padding never dilutes the average. `byte_lengths[id]` = UTF-8 bytes of token `id` (0 for
    special tokens) gives `num_bytes` for bits per byte (else num_bytes is 0). `model` is a
    SmallGPT (possibly compiled or DDP-wrapped); it runs in eval mode on `device` (default: its
    parameters' device) and is put back in its previous mode. `progress` shows a tqdm bar.
    Raises ValueError when no token at all is scored.
    """
    from tqdm.auto import tqdm

    pad = unwrap_model(model).config.pad_token_id
    device = next(model.parameters()).device if device is None else torch.device(device)
    if byte_lengths is not None:
        byte_lengths = byte_lengths.to(device)
    nats = torch.zeros((), dtype=torch.float64, device=device)
    tokens = torch.zeros((), dtype=torch.int64, device=device)
    num_bytes = torch.zeros((), dtype=torch.int64, device=device)
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(batches, desc="evaluating", unit="batch", disable=not progress):
            input_ids, labels = (t.to(device) for t in batch_tensors(batch))
            _, loss = model(input_ids, labels, reduction="sum", return_logits=False)
            nats += loss.double()
            tokens += count_real_tokens(labels, pad)
            if byte_lengths is not None:
                targets = labels[:, 1:]
                scored = targets != IGNORE_INDEX
                if pad is not None:
                    scored &= targets != pad
                num_bytes += byte_lengths[targets.clamp_min(0)][scored].sum()
    finally:
        model.train(was_training)
    count = int(tokens)
    if count == 0:
        raise ValueError("no token was scored: the batches are empty or every label is masked")
    return EvalResult(loss=float(nats) / count, tokens=count, num_bytes=int(num_bytes))


def compute_perplexity(
    model: torch.nn.Module, dataloader: Iterable[Batch], device: torch.device | str | None = None
) -> float:
    """Perplexity exp(mean nats per token) of `model` over `dataloader` (the user's guide's name).

    The mean is over real tokens only: padding (attention_mask 0, label -100 or the model's pad
    id) is neither scored nor counted, so padded batches give the same perplexity as unpadded
    ones. Batches as in `batch_tensors`. Returns inf when the loss overflows. Raises ValueError
    when no token is scored.
    """
    return evaluate_lm(model, dataloader, device=device).perplexity


class TextWindows(TokenShardDataset):
    """The scoring windows of `TokenShardDataset` over an in-memory token array (a tokenized text
    file): window k starts at token k * stride and every token but the first is scored once.

    Raises ValueError when there are fewer than 2 tokens or stride is outside [1, seq_len - 1].
    """

    def __init__(self, ids: np.ndarray, seq_len: int, stride: int, pad_token_id: int) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        if not 1 <= stride <= seq_len - 1:
            raise ValueError(f"stride must be in [1, seq_len-1={seq_len - 1}], got {stride}")
        if len(ids) < 2:
            raise ValueError(
                f"the text has {len(ids)} token(s); at least 2 are needed to score one"
            )
        self.tokens = _InMemoryTokens(np.asarray(ids))
        self.seq_len, self.stride, self.pad_token_id = seq_len, stride, pad_token_id


class _InMemoryTokens:
    """The part of a shard split that `TokenShardDataset` windows read: the ids and their count."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.num_tokens = array, len(array)


def _data_windows(
    data: Path, tokenizer: Any, split: str, seq_len: int, stride: int
) -> tuple[TokenShardDataset, str]:
    """Windows over a text file or a shard directory's split, and a description of the data."""
    if data.is_dir():
        from smallgpt.tokenizer import Tokenizer

        meta = load_meta(data)
        shard_tokenizer = Tokenizer.load(data / meta["tokenizer_file"])
        if shard_tokenizer.to_json() != tokenizer.to_json():
            raise ValueError(
                f"the shards in {data} were encoded with another tokenizer "
                f"({shard_tokenizer.vocab_size} ids) than the model's ({tokenizer.vocab_size} "
                "ids); prepare them with the checkpoint's tokenizer.json"
            )
        return TokenShardDataset(data, split, seq_len, stride), f"{split} split of {data}"
    if not data.is_file():
        raise FileNotFoundError(f"--data {data}: no such file or shard directory")
    ids = tokenizer.encode_file_to_numpy(data)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return TextWindows(ids, seq_len, stride, pad), str(data)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    *,
    split: str = "val",
    seq_len: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    tokenizer_file: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Loss, perplexity and bits per byte of a checkpoint's model on a UTF-8 text file (encoded
    with the checkpoint's tokenizer) or on a split of a shard directory (`prepare` output).

    seq_len defaults to the model's max_seq_len, stride to seq_len // 2. Returns a dict: loss
    (nats/token), perplexity, bits_per_byte, tokens, bytes, windows, seq_len, stride,
    checkpoint, data. Raises CheckpointError for a bad checkpoint, FileNotFoundError for missing
    data, ValueError for sizes that do not fit the model, a non-UTF-8 file, or shards encoded
    with another tokenizer.
    """
    from torch.utils.data import DataLoader

    from smallgpt.inference import load_for_inference

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    model, tokenizer, path = load_for_inference(
        checkpoint, device=device, tokenizer_file=tokenizer_file
    )
    max_len = model.config.max_seq_len
    seq_len = max_len if seq_len is None else seq_len
    if not 2 <= seq_len <= max_len:
        raise ValueError(
            f"seq_len must be in [2, the model's max_seq_len={max_len}], got {seq_len}"
        )
    stride = max(1, seq_len // 2) if stride is None else stride
    windows, description = _data_windows(Path(data), tokenizer, split, seq_len, stride)
    lengths = torch.zeros(model.config.vocab_size, dtype=torch.int64)
    known = torch.from_numpy(_token_byte_lengths(tokenizer))
    lengths[: len(known)] = known
    result = evaluate_lm(
        model, DataLoader(windows, batch_size=batch_size), byte_lengths=lengths, progress=progress
    )
    return {
        "loss": result.loss,
        "perplexity": result.perplexity,
        "bits_per_byte": result.bits_per_byte,
        "tokens": result.tokens,
        "bytes": result.num_bytes,
        "windows": len(windows),
        "seq_len": seq_len,
        "stride": stride,
        "checkpoint": str(path),
        "data": description,
    }


# ----------------------------------------------------------------------------- BLEU


def _bleu(effective_order: bool) -> Any:
    try:
        from sacrebleu.metrics import BLEU
    except ImportError as exc:  # a dependency of smallgpt, but may be missing from a bare install
        raise ImportError("BLEU needs sacrebleu: pip install sacrebleu") from exc
    return BLEU(smooth_method="exp", effective_order=effective_order)


def _check_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


def compute_bleu_score(reference: str, candidate: str) -> float:
    """Sentence BLEU of `candidate` against `reference`, from 0 to 1 (the user's guide's name and
    the scale of its nltk `sentence_bleu`): sacrebleu's sentence score divided by 100.
    Smoothed ("exp") and with effective order, so a short or partly matching sentence gets a
    non-zero score where unsmoothed BLEU gives 0. Raises TypeError for non-str arguments.
    """
    _check_str(reference, "reference")
    _check_str(candidate, "candidate")
    score = _bleu(effective_order=True).sentence_score(candidate, [reference]).score
    return float(score) / 100.0


def _reference_streams(
    references: Sequence[str] | Sequence[Sequence[str]], num_candidates: int
) -> list[list[str]]:
    """sacrebleu's layout (one list per reference set) from one entry per candidate: a str or
    a sequence of str (several references, the same number for every candidate)."""
    if isinstance(references, str) or len(references) != num_candidates:
        count = "a str" if isinstance(references, str) else f"{len(references)} references"
        raise ValueError(f"need one reference entry per candidate: {count} for {num_candidates}")
    per_candidate = [[r] if isinstance(r, str) else list(r) for r in references]
    widths = {len(refs) for refs in per_candidate}
    if len(widths) > 1 or 0 in widths:
        raise ValueError("every candidate needs the same number (>= 1) of references")
    for index, refs in enumerate(per_candidate):
        for ref in refs:
            _check_str(ref, f"references[{index}]")
    return [list(stream) for stream in zip(*per_candidate)]


def _corpus_bleu_score(
    references: Sequence[str] | Sequence[Sequence[str]], candidates: Sequence[str]
) -> tuple[float, str]:
    """Corpus BLEU and sacrebleu's signature of the settings that produced it."""
    if isinstance(candidates, str):
        raise TypeError("candidates must be a sequence of str, not a single str")
    candidates = [_check_str(c, f"candidates[{i}]") for i, c in enumerate(candidates)]
    if not candidates:
        raise ValueError("corpus BLEU needs at least one candidate")
    metric = _bleu(effective_order=False)
    score = metric.corpus_score(candidates, _reference_streams(references, len(candidates)))
    return float(score.score), str(metric.get_signature())


def corpus_bleu(
    references: Sequence[str] | Sequence[Sequence[str]], candidates: Sequence[str]
) -> float:
    """Corpus BLEU (0-100, sacrebleu) of `candidates`: n-gram matches and lengths are summed over
    all sentences before the geometric mean and brevity penalty.

    references: one entry per candidate, a str or a list of str (several references each, the
    same number for every candidate). Raises ValueError for mismatched counts, TypeError for
    non-str texts.
    """
    return _corpus_bleu_score(references, candidates)[0]


# ----------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smallgpt.evaluate",
        description="Evaluate a checkpoint (loss, perplexity, bits per byte) or BLEU of texts. "
        "Without a sub-command, the arguments are those of `lm`.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    lm = commands.add_parser("lm", help="loss, perplexity and bits per byte of a checkpoint")
    lm.add_argument("--checkpoint", required=True, help="checkpoint, run or checkpoints directory")
    lm.add_argument(
        "--data", required=True, help="UTF-8 text file, or a shard directory (meta.json)"
    )
    lm.add_argument("--split", default="val", choices=["train", "val"], help="shards only")
    lm.add_argument("--seq-len", type=int, help="window length (default: the model's)")
    lm.add_argument("--stride", type=int, help="tokens between windows (default: seq_len // 2)")
    lm.add_argument("--batch-size", type=int, default=8, help="windows per forward (default 8)")
    lm.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    lm.add_argument("--tokenizer", help="tokenizer JSON, if the checkpoint has none")
    lm.add_argument("--json", action="store_true", help="print one JSON object")
    lm.add_argument("--quiet", action="store_true", help="no progress bar")

    bleu = commands.add_parser("bleu", help="corpus BLEU of hypotheses against references")
    bleu.add_argument(
        "--refs",
        required=True,
        action="append",
        metavar="FILE",
        help="one reference per line; repeat for several reference sets",
    )
    bleu.add_argument("--hyps", required=True, metavar="FILE", help="one hypothesis per line")
    bleu.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _read_lines(path: str) -> list[str]:
    text = Path(path).read_text(encoding="utf-8")
    return text.splitlines()


def _run_lm(args: argparse.Namespace) -> None:
    try:
        result = evaluate_checkpoint(
            args.checkpoint,
            args.data,
            split=args.split,
            seq_len=args.seq_len,
            stride=args.stride,
            batch_size=args.batch_size,
            device=args.device,
            tokenizer_file=args.tokenizer,
            progress=not args.quiet,
        )
    except torch.OutOfMemoryError as exc:
        raise MemoryError(
            f"out of memory at --batch-size {args.batch_size}: lower it (e.g. --batch-size "
            f"{max(1, args.batch_size // 2)}) or --seq-len ({exc})"
        ) from exc
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"checkpoint {result['checkpoint']}, data {result['data']}: {result['tokens']:,} tokens "
        f"scored in {result['windows']} windows of {result['seq_len']} (stride {result['stride']})"
    )
    print(
        f"loss {result['loss']:.4f} nats/token  perplexity {result['perplexity']:.3f}  "
        f"bits per byte {result['bits_per_byte']:.4f}"
    )


def _run_bleu(args: argparse.Namespace) -> None:
    hypotheses = _read_lines(args.hyps)
    reference_sets = [_read_lines(path) for path in args.refs]
    for path, refs in zip(args.refs, reference_sets):
        if len(refs) != len(hypotheses):
            raise ValueError(
                f"{path} has {len(refs)} lines but {args.hyps} has {len(hypotheses)}; "
                "each hypothesis line needs its reference line"
            )
    score, signature = _corpus_bleu_score(list(zip(*reference_sets)), hypotheses)
    if args.json:
        print(json.dumps({"bleu": score, "signature": signature, "lines": len(hypotheses)}))
    else:
        print(f"BLEU {score:.2f} (0-100) on {len(hypotheses)} lines  [{signature}]")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (1: an error, printed on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("lm", "bleu", "-h", "--help"):
        argv.insert(0, "lm")
    args = _parser().parse_args(argv)
    try:
        if args.command == "lm":
            _run_lm(args)
        else:
            _run_bleu(args)
    except (CheckpointError, OSError, ValueError, TypeError, MemoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
