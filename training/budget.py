"""The wall-clock budget of a run (``max_train_seconds``): seconds since the process started,
interpreter start-up, imports, data loading and compilation included, as a speedrun counts them.
Under a Hydra multirun, whose jobs run one after another in one process, a later job counts from
its own start (the first job from the process start), so every job gets the whole budget.

A resumed run counts its own process's time only: the budget bounds one process, not the sum of
the runs that led to its resume state.
"""
from __future__ import annotations

from typing import Optional

from utils.clock import ProcessClock


class TimeBudget:
    """Whether ``max_seconds`` have passed since process start; the same answer on every rank."""

    def __init__(self, max_seconds: Optional[float], clock: Optional[ProcessClock] = None):
        self.max_seconds = max_seconds
        self.clock = clock or ProcessClock()

    def elapsed(self) -> float:
        return self.clock.elapsed()

    def spent(self, world_size: int = 1, group=None) -> float:
        """The share of the budget spent (1.0 or more: reached), the largest over the ranks (they
        start at slightly different times), so every rank gets the same number; 0.0 without a budget.

        Collective under torchrun when a budget is set: every rank calls it at the same points
        (a one-number all-reduce on the CPU group, so it never waits for the GPU)."""
        if self.max_seconds is None:
            return 0.0
        share = self.elapsed() / self.max_seconds
        if world_size == 1:
            return share
        import torch
        import torch.distributed as dist

        most = torch.tensor([share], dtype=torch.float64)
        dist.all_reduce(most, op=dist.ReduceOp.MAX, group=group)
        return float(most.item())

    def reached(self, world_size: int = 1, group=None) -> bool:
        """True once the budget is spent on any rank; collective as :meth:`spent`."""
        return self.max_seconds is not None and self.spent(world_size, group) >= 1.0
