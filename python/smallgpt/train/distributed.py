"""Process-group plumbing for data-parallel training under `torchrun` (or any launcher that sets
RANK, LOCAL_RANK and WORLD_SIZE). A single process without those variables runs undistributed,
and every helper here is then a no-op."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        """True when a process group with more than one process is running."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs and writes files."""
        return self.rank == 0


def init_distributed(use_cuda: bool) -> DistInfo:
    """Join the process group described by the torchrun environment variables (NCCL on CUDA,
    gloo on CPU) and return this process's rank info; without them, return a single-process info.

    Raises RuntimeError when the variables are inconsistent.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    try:
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as exc:
        raise RuntimeError(
            "WORLD_SIZE > 1 but RANK/LOCAL_RANK are missing or not integers; launch with torchrun"
        ) from exc
    if not 0 <= rank < world_size:
        raise RuntimeError(f"RANK={rank} is outside [0, WORLD_SIZE={world_size})")
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size)


def shutdown_distributed(info: DistInfo, barrier: bool = True) -> None:
    """Leave the process group; with `barrier`, first wait so no rank exits mid-collective
    (skip it when failing: the other ranks may never arrive)."""
    if info.enabled and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum `tensor` over all ranks in place (no-op on one process); returns it."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def mean_over_ranks(values: list[float], info: DistInfo) -> list[float]:
    """The mean of each of `values` over all ranks (collective; the values themselves on one
    process)."""
    if not info.enabled:
        return values
    nccl = dist.get_backend() == "nccl"  # NCCL reduces CUDA tensors only
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else None
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return (total / info.world_size).tolist()


def gather_to_all(value: Any, info: DistInfo) -> list[Any]:
    """Every rank's `value` (JSON-like data), in rank order, on every rank."""
    if not info.enabled:
        return [value]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op on one process)."""
    if info.enabled:
        dist.barrier()
