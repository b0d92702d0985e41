"""Command line of the tokenizer: `python -m smallgpt.tokenizer {train,encode} ...`.

    train   --input INPUT... --vocab-size N --out tok.json [--pattern gpt2] [--min-frequency 2]
            [--text-field text] [--skip-bad-records]
    encode  --tokenizer tok.json --input INPUT... --out data.bin [--text-field text]
            [--skip-bad-records]

Both read any corpus smallgpt.corpus reads (text, JSONL, Parquet, compressed, directories,
globs, hf:NAME[:SPLIT]). `encode` writes the ids of every document of the inputs, one after the
other with nothing between them (as for text files of the same documents), as a raw
little-endian array (uint16 when the vocabulary has at most 65536 ids, else uint32;
`np.memmap(out, dtype)` reads it), streaming in bounded memory with a progress bar."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import closing

from tqdm import tqdm

from smallgpt.corpus.chunks import read_chunks
from smallgpt.corpus.sources import Source, pretoken_cut, resolve_sources
from smallgpt.tokenizer.bpe import Tokenizer

_INPUT_HELP = "text/JSONL/Parquet files (also .gz/.zst/.bz2), directories, globs, hf:NAME[:SPLIT]"


def _add_inputs(command: argparse.ArgumentParser) -> None:
    command.add_argument("--input", nargs="+", required=True, metavar="INPUT", help=_INPUT_HELP)
    command.add_argument("--text-field", default="text", help="field or column holding the text")
    command.add_argument(
        "--skip-bad-records", action="store_true", help="skip and count bad records"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smallgpt.tokenizer", description="Train a BPE tokenizer or encode files."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="learn a vocabulary from a corpus")
    _add_inputs(train)
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

    encode = commands.add_parser("encode", help="encode a corpus into a raw token file")
    encode.add_argument("--tokenizer", required=True, help="tokenizer JSON file")
    _add_inputs(encode)
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


def _encode_documents(
    tokenizer: Tokenizer, source: Source, args: argparse.Namespace
) -> tuple[int, int]:
    """Append the ids of a source of records (or a compressed text file) to `args.out`, read in
    chunks cut where pre-tokenization allows; returns (ids written, bad records skipped)."""
    chunks = read_chunks(
        [source],
        cut=pretoken_cut(tokenizer.pattern_name),
        text_field=args.text_field,
        skip_bad_records=args.skip_bad_records,
    )
    written = skipped = 0
    bar = tqdm(total=source.size() or None, unit="B", unit_scale=True, disable=args.quiet)
    with closing(chunks), bar, open(args.out, "ab") as out:
        bar.set_description(source.path.name if source.path else source.name)
        for chunk in chunks:
            ids, _ = tokenizer.encode_batch_to_numpy(chunk.texts(), args.threads)
            ids.tofile(out)
            written += len(ids)
            skipped = chunk.skipped  # the reader's count so far
            bar.update(chunk.bytes_done - bar.n)
    return written, skipped


def _encode(args: argparse.Namespace) -> None:
    tokenizer = Tokenizer.load(args.tokenizer)
    sources = resolve_sources(args.input)  # every input checked before the output is touched
    with open(args.out, "wb"):
        pass  # start empty: the encoders append
    total = skipped = 0
    try:
        for source in sources:
            if source.format == "text" and source.compression is None:
                progress = not args.quiet  # plain text streams through Rust
                total += tokenizer.encode_file_to_bin(
                    source.name, args.out, args.threads, progress=progress
                )
            else:
                written, bad = _encode_documents(tokenizer, source, args)
                total, skipped = total + written, skipped + bad
    except BaseException:
        os.unlink(args.out)  # no half-written token file is left to be taken for a whole one
        raise
    print(f"wrote {args.out}: {total} ids as {tokenizer.token_dtype.name}")
    if skipped:
        print(f"skipped {skipped} bad records")


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
