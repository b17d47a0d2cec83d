"""Data-parallel training within a fold: torchrun + DistributedDataParallel.

Launch any labelaudit entry point under ``torchrun --nproc_per_node G``; each
process trains on its :class:`~torch.utils.data.DistributedSampler` shard of the
fold's training images, gradients are averaged by DDP, and every process
evaluates a shard of the held-out fold (losses are summed across processes, so
every process takes the same early-stopping decision). Only rank 0 writes files.
``batch_size`` is per process; the effective batch is ``batch_size * G``.

On GPUs the backend is NCCL, on CPU gloo (what CI tests with 2 processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank and world size from the environment ``torchrun`` sets (1 process if unset)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )


def setup(device_type: str) -> tuple[DistInfo, bool]:
    """Join the process group when launched by torchrun.

    Returns
    -------
    (info, created)
        ``created`` is True when this call initialised the group (the caller
        then tears it down with :func:`teardown`).
    """
    info = env_info()
    if not info.enabled:
        return info, False
    if dist.is_initialized():
        return info, False
    backend = "nccl" if device_type == "cuda" and dist.is_nccl_available() else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend)
    return info, True


def teardown(created: bool) -> None:
    if created and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Sum a few floats over all processes (for validation losses)."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_gather(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's ``obj``, in rank order (picklable objects)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def wrap(model: torch.nn.Module, info: DistInfo, device: torch.device, find_unused: bool):
    """Wrap ``model`` in DistributedDataParallel when running distributed."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def shard(indices, info: DistInfo):
    """This process's contiguous share of ``indices`` (for evaluation)."""
    if not info.enabled:
        return indices
    import numpy as np

    return np.array_split(indices, info.world)[info.rank]
