"""Metric sums on the device and their reduction over ranks, shared by training and evaluation."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.distributed as dist


def to_device(batch: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def stack_metrics(metrics: Dict[str, torch.Tensor], keys: List[str]) -> torch.Tensor:
    return torch.stack([metrics[k].to(torch.float64) for k in keys])


def reduce_metrics(keys: List[str], values: torch.Tensor, rank: int, world_size: int,
                   loss_divisor: Union[int, Sequence[int], None] = None, keep_count: bool = False) -> Optional[List[Dict[str, float]]]:
    """Sum per-rank metric sums ``values [rows, len(keys)]`` on rank 0 and turn each row into means.

    A metric is divided by the row's ``count`` (examples that halted), losses by ``loss_divisor``
    when given (training: the global batch, as the original; one per row, or one for all). Returns
    None except on rank 0.
    """
    if world_size > 1:
        dist.reduce(values, dst=0)
    if rank != 0:
        return None
    rows = []
    divisors = loss_divisor if isinstance(loss_divisor, (list, tuple)) else [loss_divisor] * values.shape[0]
    for row, divisor in zip(values.cpu().numpy(), divisors):
        m = dict(zip(keys, row))
        count = max(m["count"] if keep_count else m.pop("count"), 1)
        rows.append({k: float(v / (divisor if divisor is not None and k.endswith("loss") else count)) for k, v in m.items()})
    return rows


def flatten_metrics(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """``{set: {metric: v}}`` as ``{"set/metric": v}`` (W&B keys)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update({f"{k}/{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out
