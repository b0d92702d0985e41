"""`python -m smallgpt.data prepare`: token shards from text files."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from smallgpt.data.shards import SPLITS, prepare_shards
from smallgpt.tokenizer.bpe import Tokenizer


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m smallgpt.data prepare --tokenizer tok.json --input FILE... --out DIR`."""
    parser = argparse.ArgumentParser(
        prog="python -m smallgpt.data", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="tokenize text files into train/val token shards")
    prepare.add_argument(
        "--tokenizer", required=True, help="tokenizer JSON from smallgpt.tokenizer"
    )
    prepare.add_argument("--input", required=True, nargs="+", help="text files (one document each)")
    prepare.add_argument("--out", required=True, help="output directory")
    prepare.add_argument("--val-fraction", type=float, default=0.01, help="default: 0.01")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    meta = prepare_shards(
        Tokenizer.load(args.tokenizer),
        args.input,
        args.out,
        val_fraction=args.val_fraction,
        show_progress=not args.quiet,
    )
    for name in SPLITS:
        split = meta["splits"][name]
        print(
            f"{name}: {split['tokens']} tokens, {split['text_bytes']} bytes -> {args.out}/{split['file']}"
        )
