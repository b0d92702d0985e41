"""Compile every kernel for a GPU architecture without a GPU and read its resource usage.

`compile_report` compiles each (kernel, head dim, dtype, autotune candidate) with `triton.compile`
for a `GPUTarget`, reads shared memory per block from the compiled metadata and registers and the
local stack frame (where spilled registers go; these kernels have no other local memory) from
`cuobjdump -res-usage` on the cubin, and says whether the candidate fits the architecture. Triton
keeps compiled kernels in its cache (keyed by source, options and target), so a rerun is quick.
Importing this module imports triton in compiler mode: do not import it under TRITON_INTERPRET=1.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.runtime.autotuner import Autotuner

from smallgpt.kernels import _attention_triton as attn
from smallgpt.kernels import _cross_entropy_triton as ce
from smallgpt.kernels._support import SUPPORTED_HEAD_DIMS

# Shared memory per block (bytes) an architecture allows.
SHARED_LIMITS: dict[str, int] = {
    "sm_80": 163 * 1024,
    "sm_86": 99 * 1024,
    "sm_89": 99 * 1024,
    "sm_90": 227 * 1024,
}
DTYPES: tuple[str, ...] = ("fp16", "bf16")
TRITON_VERSION: str = triton.__version__
_REGISTERS = 255  # per thread on every architecture above
_ALIGNED = 16  # Triton specialises pointers and integers divisible by 16, as real launches have
# The files that decide what the report compiles, relative to the repository's python/ folder.
SOURCES: tuple[str, ...] = tuple(
    f"smallgpt/kernels/{name}.py"
    for name in ("_attention_triton", "_cross_entropy_triton", "_support", "resources")
)


@dataclass(frozen=True)
class Job:
    """One compilation: a kernel under a name, its constexprs, its launch options."""

    kernel: str
    head_dim: int | None
    dtype: str
    arch: str
    config: dict
    fn_name: str
    constexprs: dict
    num_warps: int
    num_stages: int


def _types(dtype: str) -> Callable[[str], str]:
    """Triton signature type of each runtime argument of kernel `fn_name`."""
    fp32_pointers = {"LSE", "DELTA", "LOSS", "SCALE"}
    ints = {"TARGETS": "*i64", "SEED": "*i64"}
    floats = {"softmax_scale", "dropout_p", "label_smoothing"}

    def type_of(name: str) -> str:
        if not _is_pointer(name):
            return "fp32" if name in floats else "i32"
        if name in ints:
            return ints[name]
        if name in fp32_pointers:
            return "*fp32"
        return f"*{dtype}"

    return type_of


def _is_pointer(name: str) -> bool:
    """Kernel arguments in capitals are tensors, except the sizes H, T and SEQ_BUCKET."""
    return name.isupper() and name not in {"H", "T", "SEQ_BUCKET"}


def sources_sha256() -> dict[str, str]:
    """sha256 of each of SOURCES: a report made from other sources is stale."""
    root = Path(__file__).resolve().parents[2]
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in SOURCES}


def _attention_jobs(arch: str, dtype: str) -> Iterator[Job]:
    capability = divmod(int(arch.removeprefix("sm_")), 10)
    fn_names = {
        "attention_forward": "_attn_fwd_kernel",
        "attention_backward_kv": "_attn_bwd_kv_kernel",
        "attention_backward_q": "_attn_bwd_q_kernel",
    }
    for head_dim in SUPPORTED_HEAD_DIMS:
        yield Job(
            "attention_backward_delta", head_dim, dtype, arch,
            {"BLOCK_M": attn.DELTA_BLOCK, "num_warps": 4, "num_stages": 3},
            "_attn_bwd_delta_kernel", {"HEAD_DIM": head_dim, "BLOCK_M": attn.DELTA_BLOCK}, 4, 3,
        )  # fmt: skip
        for dropout in (False, True):
            for kernel, names in attn.TILE_NAMES.items():
                name = kernel + ("_dropout" if dropout else "")
                for owned, walked, warps, stages in attn.candidates(name, capability):
                    tiles = {names[0]: owned, names[1]: walked}
                    constexprs = {
                        "HEAD_DIM": head_dim, "CAUSAL": True, "DROPOUT": dropout,
                        "PRECISION": "tf32", "WIDE": False, **tiles,
                    }  # fmt: skip
                    yield Job(
                        name, head_dim, dtype, arch,
                        {**tiles, "num_warps": warps, "num_stages": stages},
                        fn_names[kernel], constexprs, warps, stages,
                    )  # fmt: skip


def _cross_entropy_jobs(arch: str, dtype: str) -> Iterator[Job]:
    # the widest single-block row and the looped one: the two shapes a real vocabulary takes
    for single, block in ((True, ce.SINGLE_MAX), (False, ce.LOOP_BLOCK)):
        _, warps, _ = ce.block_and_warps(block if single else block * 2)
        for write_grad in (True, False):
            name = "cross_entropy" + ("_single_block" if single else "_looped")
            name += "_loss_and_grad" if write_grad else "_loss"
            constexprs = {
                "SMOOTHING": True, "WRITE_GRAD": write_grad, "SINGLE_BLOCK": single,
                "BLOCK_V": block,
            }  # fmt: skip
            config = {"BLOCK_V": block, "num_warps": warps, "num_stages": 3}
            yield Job(
                name, None, dtype, arch, config, "_cross_entropy_kernel", constexprs, warps, 3
            )
    _, warps = ce.scale_launch(ce.LOOP_BLOCK * 2)
    config = {"BLOCK_V": ce.LOOP_BLOCK, "num_warps": warps, "num_stages": 3}
    constexprs = {"BLOCK_V": ce.LOOP_BLOCK}
    yield Job("cross_entropy_scale_rows", None, dtype, arch, config, "_scale_rows_kernel",
              constexprs, warps, 3)  # fmt: skip


def jobs(archs: list[str], dtypes: list[str], kernels: list[str] | None = None) -> list[Job]:
    """Every compilation of the report for `archs` and `dtypes`, optionally only kernels whose name
    starts with one of `kernels`."""
    found = [
        job
        for arch in archs
        for dtype in dtypes
        for make in (_attention_jobs, _cross_entropy_jobs)
        for job in make(arch, dtype)
    ]
    if kernels:
        found = [job for job in found if job.kernel.startswith(tuple(kernels))]
    return found


def _jit_function(fn_name: str):
    kernel = getattr(attn, fn_name, None) or getattr(ce, fn_name)
    return kernel.fn if isinstance(kernel, Autotuner) else kernel  # it wraps the JITFunction


def _cuobjdump() -> str:
    bundled = os.path.join(
        os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"
    )
    return bundled if os.path.exists(bundled) else "cuobjdump"


def compile_one(job: Job) -> dict:
    """Compile `job` and return its report record (see the module docstring)."""
    fn = _jit_function(job.fn_name)
    type_of = _types(job.dtype)
    signature = {
        name: "constexpr" if name in job.constexprs else type_of(name) for name in fn.arg_names
    }
    aligned = {
        (i,): [["tt.divisibility", _ALIGNED]]
        for i, name in enumerate(fn.arg_names)
        if name not in job.constexprs and (_is_pointer(name) or name.startswith("stride"))
    }
    source = triton.compiler.ASTSource(
        fn=fn, signature=signature, constexprs=job.constexprs, attrs=aligned
    )
    capability = int(job.arch.removeprefix("sm_"))
    compiled = triton.compile(
        source,
        target=GPUTarget("cuda", capability, 32),
        options={"num_warps": job.num_warps, "num_stages": job.num_stages},
    )
    registers, spills = _resource_usage(compiled.asm["cubin"])
    shared = int(compiled.metadata.shared)
    return {
        "kernel": job.kernel,
        "head_dim": job.head_dim,
        "dtype": job.dtype,
        "arch": job.arch,
        "config": job.config,
        "shared_bytes": shared,
        "registers": registers,
        "spills": spills,
        "fits": shared <= SHARED_LIMITS[job.arch] and spills == 0 and registers <= _REGISTERS,
    }


def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, local stack bytes) of the one kernel in `cubin`."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [_cuobjdump(), "-res-usage", f.name], check=True, capture_output=True, text=True
        ).stdout
    usage = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", text)
    if usage is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no resource line:\n{text}")
    registers, stack, local = (int(x) for x in usage.groups())
    return registers, stack + local


def compile_report(job_list: list[Job], processes: int = 1) -> list[dict]:
    """Records for every job, compiled in `processes` worker processes (1: in this process)."""
    if processes <= 1:
        return [compile_one(job) for job in job_list]
    with ProcessPoolExecutor(processes) as pool:
        return list(pool.map(compile_one, job_list))


def unfit_groups(records: list[dict]) -> list[tuple]:
    """(kernel, head_dim, dtype, arch) groups in which no candidate fits."""
    fits: dict[tuple, bool] = {}
    for r in records:
        key = (r["kernel"], r["head_dim"], r["dtype"], r["arch"])
        fits[key] = fits.get(key, False) or r["fits"]
    return [key for key, ok in fits.items() if not ok]
