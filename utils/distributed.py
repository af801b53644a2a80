"""Process-group set-up shared by pretrain.py and evaluate.py.

Under ``torchrun`` (``LOCAL_RANK`` set) one process per rank: NCCL when CUDA is available,
gloo otherwise, so the same command runs on GPUs and CPUs, on one node or several.

Every collective waits at most ``dist_timeout_s`` seconds (:data:`DEFAULT_DIST_TIMEOUT_S` unless
configured): a rank that stopped answering ends the job with :class:`RankStoppedAnswering`
instead of hanging it for gloo's default 30 minutes.
"""
from __future__ import annotations

import datetime
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

import torch
import torch.distributed as dist

DEFAULT_DIST_TIMEOUT_S = 300.0
# NCCL's watchdog aborts the whole process when a collective outlives its timeout, before Python
# can say anything. Its timeout is therefore set this much longer than the CPU group's, whose
# collective (the stop-signal agreement, every step) then fails first and names the silent rank,
# unless the host is itself waiting on the GPU (docs/training.md, "Running on a cluster").
NCCL_GRACE_S = 60.0


@dataclass
class DistInfo:
    rank: int
    world_size: int
    device: torch.device
    cpu_group: Any = None  # gloo group for Python objects (evaluators); None when single-process
    timeout_s: float = DEFAULT_DIST_TIMEOUT_S
    peers: List[Tuple[str, int]] = field(default_factory=list)  # (host, pid) of every rank


class RankStoppedAnswering(RuntimeError):
    """A collective timed out or lost its peer. ``report`` is True on the one rank that prints it."""

    def __init__(self, message: str, report: bool):
        super().__init__(message)
        self.report = report


def init_distributed(timeout_s: Optional[float] = None) -> DistInfo:
    """Join the process group if launched by torchrun; pick this rank's device."""
    use_cuda = torch.cuda.is_available()
    timeout_s = DEFAULT_DIST_TIMEOUT_S if timeout_s is None else float(timeout_s)
    if "LOCAL_RANK" not in os.environ:
        return DistInfo(rank=0, world_size=1, device=torch.device("cuda" if use_cuda else "cpu"), timeout_s=timeout_s)

    local_rank = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                            timeout=datetime.timedelta(seconds=timeout_s + NCCL_GRACE_S) if use_cuda else timeout)
    cpu_group = dist.new_group(backend="gloo", timeout=timeout) if use_cuda else dist.group.WORLD
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    peers: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(peers, (socket.gethostname(), os.getpid()), group=cpu_group)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device, cpu_group=cpu_group, timeout_s=timeout_s,
                    peers=peers)


def is_peer_failure(e: BaseException) -> bool:
    """A collective that timed out or whose peer went away (gloo's and NCCL's wording)."""
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(s in text for s in ("timed out", "timeout", "connection closed by peer",
                                                                   "connection reset by peer", "broken pipe"))


def roll_call(info: DistInfo, wait_s: float = 3.0) -> Optional[List[int]]:
    """After a failed collective: the ranks that do not answer within ``wait_s`` seconds.

    Every rank still alive writes its name in torchrun's key-value store and looks for the
    others'. Returns None when the store itself cannot be reached (not launched by torchrun, or
    the store lived in the stopped process).
    """
    try:
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                              timeout=datetime.timedelta(seconds=wait_s))
        prefix = f"hrm_roll_call/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
        store.set(f"{prefix}{info.rank}", "here")
        keys = [f"{prefix}{r}" for r in range(info.world_size)]
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not store.check(keys):
            time.sleep(0.1)
        return [r for r, k in enumerate(keys) if not store.check([k])]
    except (KeyError, RuntimeError, ValueError, OSError):
        return None


def peer_failure_error(e: BaseException, info: DistInfo, where: str) -> RankStoppedAnswering:
    """One line naming the rank(s) that stopped answering (found by :func:`roll_call`)."""
    missing = roll_call(info)
    _continue_stopped(info, missing or [])
    first_alive = min(set(range(info.world_size)) - set(missing or [])) if missing else 0
    if missing:
        who = f"rank {missing[0]}" if len(missing) == 1 else "ranks " + ", ".join(map(str, missing))
        text = f"{who} stopped answering"
    else:
        text = "a rank stopped answering (could not tell which: the rendezvous store did not reply)"
    return RankStoppedAnswering(f"{text} for {info.timeout_s:g} s (dist_timeout_s) {where}; ending the job "
                                f"(rank {info.rank} saw: {str(e).strip().splitlines()[0][:160]})", report=info.rank == first_alive)


def _continue_stopped(info: DistInfo, ranks: List[int]) -> None:
    """Send SIGCONT to silent ranks on this host. A stopped process (SIGSTOP, a debugger) cannot
    receive the SIGTERM torchrun sends when the job fails, and torchrun then waits 30 s before
    SIGKILL; continued, it notices its failed collective and exits at once."""
    host = socket.gethostname()
    for r in ranks:
        if r < len(info.peers) and info.peers[r][0] == host:
            try:
                os.kill(info.peers[r][1], signal.SIGCONT)
            except OSError:
                pass


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
