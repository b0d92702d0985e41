"""`python -m smallgpt.train CONFIG [section.key=value ...]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from smallgpt.config.loader import load_config, valid_keys
from smallgpt.config.schema import ConfigError
from smallgpt.train.oom import out_of_memory_advice
from smallgpt.train.step import TrainingDivergedError
from smallgpt.train.trainer import Trainer


def build_parser() -> argparse.ArgumentParser:
    """The `python -m smallgpt.train` argument parser."""
    keys = ", ".join(valid_keys())
    parser = argparse.ArgumentParser(
        prog="python -m smallgpt.train",
        description="Train a SmallGPT from a YAML config (a file or a packaged preset name).",
        epilog="example: python -m smallgpt.train configs/smallgpt-25m.yaml "
        f"data.text_files=[corpus.txt] optim.lr=3e-4 train.batch_size=16\n\nconfig keys: {keys}",
    )
    parser.add_argument(
        "config", help="YAML config file or preset (smallgpt-25m, rtx-25m, demo-cpu)"
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    parser.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="continue from the newest valid checkpoint of the run (auto) or from PATH",
    )
    parser.add_argument("--run-dir", help="run directory (overrides train.run_dir)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2: bad config, 1: training failed)."""
    args = build_parser().parse_intermixed_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with Trainer(config, run_dir=args.run_dir, resume=args.resume) as trainer:
            summary = trainer.fit()
            if trainer.dist.is_main:
                print(summary.format())
    except (
        TrainingDivergedError,
        FileExistsError,
        FileNotFoundError,
        ImportError,
        ValueError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except torch.OutOfMemoryError as exc:
        train = config.train
        advice = out_of_memory_advice(
            exc,
            batch_size=train.batch_size,
            grad_accum_steps=train.grad_accum_steps,
            seq_len=config.seq_len,
            precision=train.precision,
        )
        print(f"error: {advice}", file=sys.stderr)
        return 1
    return 0
