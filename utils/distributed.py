"""Process-group set-up shared by pretrain.py and evaluate.py.

Under ``torchrun`` (``LOCAL_RANK`` set) one process per rank: NCCL when CUDA is available,
gloo otherwise, so the same command runs on GPUs and CPUs, on one node or several.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int
    world_size: int
    device: torch.device
    cpu_group: Any = None  # gloo group for Python objects (evaluators); None when single-process


def init_distributed() -> DistInfo:
    """Join the process group if launched by torchrun; pick this rank's device."""
    use_cuda = torch.cuda.is_available()
    if "LOCAL_RANK" not in os.environ:
        return DistInfo(rank=0, world_size=1, device=torch.device("cuda" if use_cuda else "cpu"))

    local_rank = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    cpu_group = dist.new_group(backend="gloo") if use_cuda else dist.group.WORLD
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device, cpu_group=cpu_group)


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if info.world_size == 1:
        return obj
    box: List[Optional[Any]] = [obj if info.rank == 0 else None]
    dist.broadcast_object_list(box, src=0, group=info.cpu_group)
    return box[0]


def all_reduce_grads(params: List[torch.Tensor]) -> None:
    """Sum gradients over ranks with one collective (flattened) instead of one per tensor."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def min_nonzero_over_ranks(value: torch.Tensor, world_size: int) -> torch.Tensor:
    """The smallest non-zero ``value`` over ranks (0 when it is 0 everywhere)."""
    value = value.clone()
    if world_size > 1:
        # Encode "none" (0) as a large number for MIN.
        value = torch.where(value == 0, torch.iinfo(torch.int64).max, value)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        value = torch.where(value == torch.iinfo(torch.int64).max, 0, value)
    return value


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
