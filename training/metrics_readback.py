"""Training metrics of every step, read back from the device in batches (``log_interval``).

The original logs every step's metrics to W&B, which costs a device sync, an all-reduce and a copy
per step. Here each step's metric sums stay on the device and ``log_interval`` steps are reduced
and copied together: the logged steps and values are the same as a read-back per step, only the
transfers are batched. The default (``log_interval: null``) is one step on a CPU, where a read-back
costs nothing, and :data:`CUDA_LOG_INTERVAL` steps on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from utils.metrics import reduce_metrics

CUDA_LOG_INTERVAL = 20


def resolve_log_interval(log_interval: Optional[int], device: torch.device) -> int:
    """``log_interval`` as configured, or the default for ``device`` when it is null."""
    if log_interval is not None:
        return log_interval
    return CUDA_LOG_INTERVAL if torch.device(device).type == "cuda" else 1


@dataclass
class MetricsReadback:
    """Per-step metric sums waiting on the device; :meth:`flush` reduces and copies them at once."""
    interval: int
    keys: Optional[List[str]] = None
    rows: List[torch.Tensor] = field(default_factory=list)
    steps: List[int] = field(default_factory=list)
    lrs: List[Optional[float]] = field(default_factory=list)
    loss_divisors: List[int] = field(default_factory=list)

    def add(self, keys: List[str], row: torch.Tensor, step: int, lr: Optional[float], loss_divisor: int) -> None:
        """One step's metric sums ``row [len(keys)]`` (same keys, same order on every rank)."""
        if self.keys is not None and keys != self.keys:
            raise ValueError(f"training metrics changed from {self.keys} to {keys} between steps")
        self.keys = keys
        self.rows.append(row)
        self.steps.append(step)
        self.lrs.append(lr)
        self.loss_divisors.append(loss_divisor)

    def due(self, step: int) -> bool:
        return step % self.interval == 0

    def flush(self, rank: int, world_size: int) -> List[Tuple[int, Dict[str, float]]]:
        """Every waiting step as ``(step, {"train/<metric>": mean, "train/lr": lr})`` on rank 0
        (empty elsewhere): one all-reduce and one copy for all of them. Every rank must call it."""
        if not self.rows:
            return []
        assert self.keys is not None
        reduced = reduce_metrics(self.keys, torch.stack(self.rows), rank, world_size, loss_divisor=self.loss_divisors, keep_count=True)
        steps, lrs = self.steps, self.lrs
        self.rows, self.steps, self.lrs, self.loss_divisors = [], [], [], []
        if reduced is None:
            return []
        return [(step, {**{f"train/{k}": v for k, v in row.items()}, "train/lr": lr}) for step, lr, row in zip(steps, lrs, reduced)]
