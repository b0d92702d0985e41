"""`python -m smallgpt.kernels.check --compile-only`: the kernels' resource report, without a GPU.

Compiles every kernel for every supported head dim, dtype (fp16, bf16) and autotune candidate for
each architecture asked (`--arch sm_80,sm_86,sm_89,sm_90` by default), prints one line per
(kernel, head dim, dtype, architecture, candidate), writes every record to `--json FILE`, and exits 1
when some group has no candidate that fits (shared memory within the architecture's limit, no
spills) or some candidate does not fit. `--report FILE` writes the records with the Triton version
and the sha256 of the kernel sources they were compiled from (`make kernel-report`, committed as
benches/kernel_report.json); `--verify FILE` checks such a report against the sources and
recompiles a sample of it (one candidate of every kernel, every architecture at least once): the
sample must match the report exactly under the same Triton version and fit under another. This
module is the command line only; the compiling is in `resources`. `--gpu` only points to
`python -m smallgpt.gpu_check`, which sits above the model it benchmarks.
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
    parser.add_argument(
        "--report",
        metavar="FILE",
        help="write the records with the Triton version and source hashes",
    )
    parser.add_argument(
        "--verify",
        metavar="FILE",
        help="check a --report FILE against the sources and a recompiled sample",
    )
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
    if args.verify:
        return _verify(resources, args.verify, args.jobs)
    job_list = resources.jobs(archs, dtypes, [k for k in args.kernel.split(",") if k])
    records = resources.compile_report(job_list, processes=min(args.jobs, len(job_list)))
    if args.json:
        _write(args.json, records)
    if args.report:
        _write(args.report, _report(resources, records))
    for r in records:
        print(_line(r))
    return _status(_fit_problems(resources, records))


def _write(path: str, data: object) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def _line(r: dict) -> str:
    return (
        f"{r['arch']} {r['kernel']} head_dim={r['head_dim']} {r['dtype']} {r['config']}: "
        f"shared {r['shared_bytes']} B, {r['registers']} registers, {r['spills']} B spilled"
        f"{'' if r['fits'] else '  DOES NOT FIT'}"
    )


def _report(resources, records: list[dict]) -> dict:
    return {
        "command": "make kernel-report",
        "triton": resources.TRITON_VERSION,
        "sources_sha256": resources.sources_sha256(),
        "records": records,
    }


def _fit_problems(resources, records: list[dict]) -> list[str]:
    """Every candidate must fit where it can be chosen, and every group needs one."""
    problems = [f"candidate does not fit: {_line(r)}" for r in records if not r["fits"]]
    problems += [f"no fitting candidate: {group}" for group in resources.unfit_groups(records)]
    return problems


def _key(record: dict) -> tuple:
    return (
        record["kernel"],
        record["head_dim"],
        record["dtype"],
        record["arch"],
        json.dumps(record["config"], sort_keys=True),
    )


def sample(records: list[dict], archs: list[str]) -> list[dict]:
    """One record of every kernel, each on the next of `archs` in turn (so every architecture is
    covered once there are as many kernels) and the dtypes alternating after each round of them, at
    the smallest head dim (the quickest compile)."""
    picked = []
    for i, kernel in enumerate(sorted({r["kernel"] for r in records})):
        arch = archs[i % len(archs)]
        dtype = ("fp16", "bf16")[i // len(archs) % 2]
        group = [r for r in records if r["kernel"] == kernel and r["arch"] == arch]
        group = [r for r in group if r["dtype"] == dtype] or group
        picked.append(min(group, key=lambda r: (r["head_dim"] or 0, _key(r))))
    return picked


def _verify(resources, path: str, processes: int) -> int:
    """Exit status of checking the report at `path` (see the module docstring)."""
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    stale = [
        name
        for name, digest in resources.sources_sha256().items()
        if report["sources_sha256"].get(name) != digest
    ]
    if stale:
        return _status([f"error: {path} is stale ({', '.join(stale)} changed): make kernel-report"])
    records = report["records"]
    archs = sorted({r["arch"] for r in records})
    expected = resources.jobs(archs, sorted({r["dtype"] for r in records}))
    by_key = {_key(vars(job)): job for job in expected}
    if set(by_key) != {_key(r) for r in records}:
        return _status(
            [f"error: {path} does not hold the candidate lists' compilations: make kernel-report"]
        )
    problems = _fit_problems(resources, records)
    if problems:
        return _status(problems)
    picked = sample(records, archs)
    fresh = resources.compile_report(
        [by_key[_key(r)] for r in picked], processes=min(processes, len(picked))
    )
    # the same compiler gives the same code; another one is held only to the limits
    exact = report["triton"] == resources.TRITON_VERSION
    fields = ("shared_bytes", "registers", "spills", "fits") if exact else ("fits",)
    for old, new in zip(picked, fresh):
        print(_line(new))
        if any(old[f] != new[f] for f in fields):
            problems.append(f"recompiled differs from the report: {_line(new)} vs {_line(old)}")
    return _status(problems)


def _status(problems: list[str]) -> int:
    """Print `problems` to stderr; the exit status they make (1 if any)."""
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
