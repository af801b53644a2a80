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


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
