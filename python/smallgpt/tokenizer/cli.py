"""Command line of the tokenizer: `python -m smallgpt.tokenizer {train,encode} ...`.

    train   --input INPUT... --vocab-size N --out tok.json [--pattern gpt2] [--min-frequency 2]
            [--text-field text] [--skip-bad-records]
    encode  --tokenizer tok.json --input FILE... --out data.bin

`train` reads any corpus smallgpt.corpus reads (text, JSONL, Parquet, compressed, directories,
globs, hf:NAME[:SPLIT]). `encode` writes the ids of all inputs, one after the other, as a raw little-endian array
(uint16 when the vocabulary has at most 65536 ids, else uint32; `np.memmap(out, dtype)` reads
it), streaming each file in bounded memory with a progress bar.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from smallgpt.tokenizer.bpe import Tokenizer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smallgpt.tokenizer", description="Train a BPE tokenizer or encode files."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="learn a vocabulary from a corpus")
    train.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="INPUT",
        help="text/JSONL/Parquet files (also .gz/.zst/.bz2), directories, globs, hf:NAME[:SPLIT]",
    )
    train.add_argument("--text-field", default="text", help="field or column holding the text")
    train.add_argument("--skip-bad-records", action="store_true", help="skip and count bad records")
    train.add_argument("--vocab-size", type=int, default=10000, help="ids, specials included")
    train.add_argument("--out", required=True, help="tokenizer JSON file to write")
    train.add_argument("--pattern", default="gpt2", choices=["gpt2", "cl100k", "none"])
    train.add_argument("--min-frequency", type=int, default=2, help="merge pairs seen this often")
    train.add_argument(
        "--special-tokens",
        nargs="*",
        default=["<|endoftext|>", "<|pad|>"],
        metavar="TOKEN",
        help="special token strings (ids after the learned tokens)",
    )
    train.add_argument("--threads", type=int, default=None, help="default: all cores")

    encode = commands.add_parser("encode", help="encode text files into a raw token file")
    encode.add_argument("--tokenizer", required=True, help="tokenizer JSON file")
    encode.add_argument("--input", nargs="+", required=True, metavar="FILE", help="UTF-8 text")
    encode.add_argument("--out", required=True, help="token file to write (overwritten)")
    encode.add_argument("--threads", type=int, default=None, help="default: all cores")
    encode.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _train(args: argparse.Namespace) -> None:

    tokenizer = Tokenizer.train_files(
        args.input,
        vocab_size=args.vocab_size,
        special_tokens=tuple(args.special_tokens),
        pattern=args.pattern,
        min_frequency=args.min_frequency,
        num_threads=args.threads,
        text_field=args.text_field,
        skip_bad_records=args.skip_bad_records,
    )
    tokenizer.save(args.out)
    print(f"wrote {args.out}: {tokenizer.vocab_size} ids, pattern {tokenizer.pattern_name}")


def _encode(args: argparse.Namespace) -> None:

    tokenizer = Tokenizer.load(args.tokenizer)
    missing = [path for path in args.input if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"no such file: {missing[0]}")
    with open(args.out, "wb"):
        pass  # start empty: the encoder appends
    total = 0
    for path in args.input:
        total += tokenizer.encode_file_to_bin(path, args.out, args.threads, progress=not args.quiet)
    dtype = tokenizer.token_dtype
    print(f"wrote {args.out}: {total} ids as {dtype.name}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (errors are reported on stderr)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            _train(args)
        else:
            _encode(args)
    except (OSError, ValueError, TypeError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
