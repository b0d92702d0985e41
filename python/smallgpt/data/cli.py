"""`python -m smallgpt.data prepare`: token shards from a corpus (text, JSONL, Parquet, datasets)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from smallgpt.corpus.sources import accepted_extensions
from smallgpt.data.shards import SPLITS, prepare_shards
from smallgpt.tokenizer.bpe import Tokenizer


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m smallgpt.data prepare --tokenizer tok.json --input INPUT... --out DIR`.

    Returns the exit status; bad input is reported on stderr (the file and the place).
    """
    parser = argparse.ArgumentParser(
        prog="python -m smallgpt.data", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="tokenize a corpus into train/val token shards")
    prepare.add_argument(
        "--tokenizer", required=True, help="tokenizer JSON from smallgpt.tokenizer"
    )
    prepare.add_argument(
        "--input",
        required=True,
        nargs="+",
        help=(
            "files (" + ", ".join(accepted_extensions()) + "), directories, glob patterns or "
            "hf:NAME[:SPLIT]; a text file is one document, a record or row is one"
        ),
    )
    prepare.add_argument("--out", required=True, help="output directory")
    prepare.add_argument("--val-fraction", type=float, default=0.01, help="default: 0.01")
    prepare.add_argument(
        "--text-field", default="text", help="field or column holding the text (default: text)"
    )
    prepare.add_argument(
        "--skip-bad-records",
        action="store_true",
        help="skip and count bad records instead of stopping",
    )
    prepare.add_argument(
        "--split-seed", type=int, default=0, help="seed of the validation documents (default: 0)"
    )
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    try:
        meta = prepare_shards(
            Tokenizer.load(args.tokenizer),
            args.input,
            args.out,
            val_fraction=args.val_fraction,
            split_seed=args.split_seed,
            text_field=args.text_field,
            skip_bad_records=args.skip_bad_records,
            show_progress=not args.quiet,
        )
    except (OSError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name in SPLITS:
        split = meta["splits"][name]
        print(
            f"{name}: {split['tokens']} tokens, {split['documents']} documents, "
            f"{split['text_bytes']} bytes -> {args.out}/{split['file']}"
        )
    if meta["skipped_records"]:
        print(f"skipped {meta['skipped_records']} bad records")
    return 0
