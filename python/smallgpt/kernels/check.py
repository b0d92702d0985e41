"""`python -m smallgpt.kernels.check --compile-only`: the kernels' resource report, without a GPU.

Compiles every kernel for every supported head dim, dtype (fp16, bf16) and autotune candidate for
each architecture asked (`--arch sm_80,sm_86,sm_89,sm_90` by default), prints one line per
(kernel, head dim, dtype, architecture) with its best candidate, writes every record to `--json
FILE`, and exits 1 when some group has no candidate that fits (shared memory within the
architecture's limit, no spills). This module is the command line only; the work is in `resources`.
`--gpu` only points to `python -m smallgpt.gpu_check`, which sits above the model it benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m smallgpt.kernels.check", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--compile-only",
        action="store_true",
        help="compile for the target architectures without a GPU",
    )
    mode.add_argument(
        "--gpu",
        action="store_true",
        help="points to python -m smallgpt.gpu_check (it trains a model, which kernels cannot)",
    )
    parser.add_argument("--arch", default="sm_80,sm_86,sm_89,sm_90", help="comma-separated")
    parser.add_argument("--dtype", default="fp16,bf16", help="comma-separated: fp16, bf16")
    parser.add_argument(
        "--kernel", default="", help="only kernels whose name starts with one of these"
    )
    parser.add_argument("--json", metavar="FILE", help="write every record to FILE as a JSON list")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the report; returns the exit status (0: every group has a fitting candidate)."""
    args = _parser().parse_args(argv)
    if args.gpu:
        print(
            "error: the GPU check is `python -m smallgpt.gpu_check --out DIR` (or `make "
            "gpu-check`): it benchmarks the model too, so it lives above the kernels",
            file=sys.stderr,
        )
        return 2
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print(
            "error: unset TRITON_INTERPRET: the report compiles kernels for GPUs", file=sys.stderr
        )
        return 2
    from smallgpt.kernels import resources  # imports triton, in compiler mode (checked above)

    archs = [a for a in args.arch.split(",") if a]
    dtypes = [d for d in args.dtype.split(",") if d]
    unknown = [a for a in archs if a not in resources.SHARED_LIMITS]
    unknown += [d for d in dtypes if d not in resources.DTYPES]
    if unknown or args.jobs < 1:
        print(
            f"error: unknown --arch/--dtype {unknown} (known: {sorted(resources.SHARED_LIMITS)}, "
            f"{resources.DTYPES}) or --jobs < 1",
            file=sys.stderr,
        )
        return 2
    job_list = resources.jobs(archs, dtypes, [k for k in args.kernel.split(",") if k])
    records = resources.compile_report(job_list, processes=min(args.jobs, len(job_list)))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(records, f, indent=1)
    for r in records:
        print(
            f"{r['arch']} {r['kernel']} head_dim={r['head_dim']} {r['dtype']} {r['config']}: "
            f"shared {r['shared_bytes']} B, {r['registers']} registers, {r['spills']} B spilled"
            f"{'' if r['fits'] else '  DOES NOT FIT'}"
        )
    unfit = resources.unfit_groups(records)
    for group in unfit:
        print(f"no fitting candidate: {group}", file=sys.stderr)
    return 1 if unfit else 0


if __name__ == "__main__":
    sys.exit(main())
