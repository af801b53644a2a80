"""Evaluation on the test split and the metric reduction shared with training."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from puzzle_dataset import PuzzleDatasetMetadata
from utils import checkpoint as ckpt
from utils.functions import unwrap_compiled
from utils.progress import progress_bar
from utils.segments import SegmentOptions, run_eval_segments

if TYPE_CHECKING:
    from pretrain import PretrainConfig, TrainState


def to_device(batch: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def stack_metrics(metrics: Dict[str, torch.Tensor], keys: List[str]) -> torch.Tensor:
    return torch.stack([metrics[k].to(torch.float64) for k in keys])


def reduce_metrics(keys: List[str], values: torch.Tensor, rank: int, world_size: int, loss_divisor: Optional[int] = None,
                   keep_count: bool = False) -> Optional[List[Dict[str, float]]]:
    """Sum per-rank metric sums ``values [rows, len(keys)]`` on rank 0 and turn each row into means.

    A metric is divided by the row's ``count`` (examples that halted), losses by ``loss_divisor``
    when given (training: the global batch, as the original). Returns None except on rank 0.
    """
    if world_size > 1:
        dist.reduce(values, dst=0)
    if rank != 0:
        return None
    rows = []
    for row in values.cpu().numpy():
        m = dict(zip(keys, row))
        count = max(m["count"] if keep_count else m.pop("count"), 1)
        rows.append({k: float(v / (loss_divisor if loss_divisor is not None and k.endswith("loss") else count)) for k, v in m.items()})
    return rows


def evaluate(config: PretrainConfig, train_state: TrainState, eval_loader, eval_metadata: PuzzleDatasetMetadata,
             evaluators: Sequence[Any] = (), rank: int = 0, world_size: int = 1, cpu_group=None,
             segment_options: Optional[SegmentOptions] = None) -> Optional[Dict[str, Any]]:
    """Run the test split; returns ``{set: {metric: mean}}`` plus evaluator results on rank 0.

    Each test batch starts from a fresh carry and runs until every row halted (in eval mode
    that is exactly ``halt_max_steps`` segments, unless the model halts adaptively in evaluation;
    the ``steps`` metric is the mean number of segments used); see :func:`utils.segments.run_eval_segments`
    for the ``steps`` / ``trace`` outputs and ``segment_options`` (by default taken from
    ``eval_save_outputs``).
    """
    reduced_metrics: Optional[Dict[str, Any]] = None
    with torch.inference_mode():
        return_keys = set(config.eval_save_outputs)
        if segment_options is None:
            segment_options = SegmentOptions.from_outputs(return_keys)
        for evaluator in evaluators:
            evaluator.begin_eval()
            return_keys.update(evaluator.required_outputs)

        set_ids = {k: idx for idx, k in enumerate(eval_metadata.sets)}
        metric_keys, metric_values, save_preds = _eval_batches(config, train_state.model, eval_loader, set_ids, evaluators,
                                                               return_keys, rank=rank, segment_options=segment_options)
        if config.checkpoint_path is not None and save_preds:
            path = os.path.join(config.checkpoint_path, f"step_{train_state.step}_all_preds.{rank}")
            ckpt.atomic_torch_save({k: torch.cat(v, dim=0) for k, v in save_preds.items()}, path)
        del save_preds

        if metric_values is not None:
            rows = reduce_metrics(metric_keys, metric_values, rank, world_size)
            if rows is not None:
                reduced_metrics = {set_name: rows[set_id] for set_name, set_id in set_ids.items()}

        for evaluator in evaluators:
            save_path = None
            if config.checkpoint_path is not None:
                save_path = os.path.join(config.checkpoint_path, f"evaluator_{evaluator.__class__.__name__}_step_{train_state.step}")
            metrics = evaluator.result(save_path, rank=rank, world_size=world_size, group=cpu_group)
            if rank == 0 and metrics is not None:
                reduced_metrics = {**(reduced_metrics or {}), **metrics}
    return reduced_metrics


def _eval_batches(config: PretrainConfig, model: nn.Module, eval_loader, set_ids: Dict[str, int], evaluators: Sequence[Any],
                  return_keys: set, rank: int = 0, segment_options: Optional[SegmentOptions] = None):
    """Every test batch to the end of ACT: per-set metric sums ``[sets, metrics]`` (None without
    batches), their keys, and the outputs named in ``eval_save_outputs`` (on the CPU), without the
    rows that pad the last batch of a set."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    halt_max_steps = unwrap_compiled(model).model.config.halt_max_steps  # type: ignore[union-attr]
    save_preds: Dict[str, List[torch.Tensor]] = {}
    metric_keys: List[str] = []
    metric_values = None
    batches = progress_bar(eval_loader, desc="eval", leave=False, dynamic_ncols=True) if rank == 0 else eval_loader
    for set_name, batch, global_batch_size in batches:
        batch = to_device(batch, device)
        _, metrics, preds = run_eval_segments(model, batch, return_keys, halt_max_steps, segment_options)

        # This rank holds rows [rank * local, (rank + 1) * local) of the global batch; of a set's
        # last batch only the first `global_batch_size` rows are examples, the rest padding.
        local = batch["puzzle_identifiers"].shape[0]
        real = min(local, max(0, global_batch_size - rank * local))
        for collection in (batch, preds):
            for k, v in collection.items():
                if k in config.eval_save_outputs:
                    save_preds.setdefault(k, []).append(v[:real].cpu())
        for evaluator in evaluators:
            evaluator.update_batch(batch, preds)

        if metric_values is None:
            metric_keys = sorted(metrics.keys())
            metric_values = torch.zeros((len(set_ids), len(metric_keys)), dtype=torch.float64, device=device)
        metric_values[set_ids[set_name]] += stack_metrics(metrics, metric_keys)
    return metric_keys, metric_values, save_preds


def flatten_metrics(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """``{set: {metric: v}}`` as ``{"set/metric": v}`` (W&B keys)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update({f"{k}/{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out
