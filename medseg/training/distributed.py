"""DistributedDataParallel helpers for ``torchrun --nproc_per_node=N -m medseg train``.

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything here is a no-op and
training runs in one process. NCCL is used on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun; return this process's rank info."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" and dist.is_nccl_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over all ranks (identity in a single process)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_flag(value: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0's decision (stop early, time budget spent) for every rank."""
    if not info.enabled:
        return value
    flag = torch.tensor([1.0 if value else 0.0], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def sync_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step of an epoch each
    rank holds statistics of its own last batch; this makes every rank's checkpointable state equal.
    """
    if info.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier(info: DistInfo) -> None:
    """Wait for every rank."""
    if info.enabled:
        dist.barrier()

