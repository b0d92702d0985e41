"""`python -m smallgpt.gpu_check --out DIR` (`make gpu-check`): one call that validates a CUDA GPU.

Runs six parts, each in its own child process under its own time budget (so a CUDA error, a hang
or a crash in one part is recorded and never stops the others; the budgets add up to under 8
minutes): the `gpu`-marked tests; attention forward and forward+backward against SDPA's flash
backend; the fused linear cross-entropy's peak memory and speed against `F.cross_entropy(hidden @
weight.T)` (and Liger-Kernel's, if importable); the cross-entropy kernel's memory bandwidth as a
fraction of the device's; 300 training steps of the rtx-25m model in bf16 with and without
`torch.compile` (tokens/s, MFU); and the compile-only resource report for the device's own
architecture compared with the kernels that actually ran. Writes DIR/gpu_check.json and
DIR/gpu_check.md: the environment, every figure, and pass/fail against the targets.

`--dry-run` runs the same pipeline on the CPU under the Triton interpreter at tiny shapes (a few
steps of a tiny model, no compile) to show the script works end to end; its figures are judged
against no target. The check sits on top of the package (it builds a SmallGPT and uses the
evaluate stage's MFU), so it is not reachable as `python -m smallgpt.kernels.check`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from smallgpt.gpu_check.plan import PARTS
from smallgpt.gpu_check.runner import run_all, run_part


def main(argv: list[str] | None = None) -> int:
    """The command line; 0 when everything ran and passed (a dry run: when every part ran)."""
    parser = argparse.ArgumentParser(prog="python -m smallgpt.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="folder for the two reports")
    parser.add_argument("--dry-run", action="store_true", help="CPU, interpreter, tiny shapes")
    parser.add_argument("--tests", default="tests", help="where the gpu-marked tests are")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # one child's part
    args = parser.parse_args(argv)
    if args.part:
        return 0 if run_part(args.part, args.out, args.dry_run, args.tests)["status"] == "ok" else 1
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device here; use --dry-run to run the pipeline on the CPU",
              file=sys.stderr)  # fmt: skip
        return 2
    report = run_all(args.out, args.dry_run, args.tests)
    print((args.out / "gpu_check.md").read_text(encoding="utf-8"))
    return 0 if report["passed"] is not False else 1
