"""`python -m smallgpt.evaluate lm|bleu`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from smallgpt.checkpoint.store import CheckpointError
from smallgpt.evaluate.bleu import _corpus_bleu_score
from smallgpt.evaluate.lm import evaluate_checkpoint

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
