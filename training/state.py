"""The train state (model, optimizers, ACT carries, step, data position, EMA, best) and one
optimisation step: micro-batches with their own carries, summed gradients, the learning-rate
schedule, the reduction of the logged metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from dataset.common import PuzzleDatasetMetadata
from models.ema import EMAHelper
from utils.sign_sgd import CastedSparseEmbeddingSignSGD_Distributed
from training.best_checkpoint import BestTracker
from training.budget import TimeBudget
from training.metrics_readback import MetricsReadback
from training.preemption import StopRequest
from training.build import create_model, create_optimizers
from training.config import PretrainConfig
from training.depth import depth_at, training_depth
from utils.config import ConfigError
from utils.distributed import DistInfo, all_reduce_grads, min_nonzero_over_ranks
from utils.functions import unwrap_compiled
from utils.metrics import reduce_metrics, stack_metrics, to_device
from utils.schedule import cosine_schedule_with_warmup_lr_lambda, wsd_schedule_lr_lambda


@dataclass
class TrainState:
    model: nn.Module
    optimizers: Sequence[torch.optim.Optimizer]
    optimizer_lrs: Sequence[float]
    # The ACT carry: one per micro-batch (a list of gradient_accumulation_steps carries; None before the first step).
    carry: Any
    step: int
    total_steps: int
    # Position in the data, for exact resume: completed train passes, batches into this one.
    iters_done: int = 0
    batches_in_iter: int = 0
    ema: Optional[EMAHelper] = None
    best: Optional[BestTracker] = None  # best_metric so far (``best_metric`` set)
    # Share of max_train_seconds spent before this step, the same on every rank (lr_schedule_clock=budget).
    budget_progress: float = 0.0
    # Device-side record of the first step with a non-finite loss (0: none); read only when logging.
    first_bad_step: Optional[torch.Tensor] = field(default=None, repr=False)


def init_train_state(config: PretrainConfig, train_metadata: PuzzleDatasetMetadata, world_size: int = 1, device=None,
                     evaluate_only: bool = False) -> TrainState:
    """Model, optimizers and step count; ``evaluate_only``: no training follows (``compile=auto``
    then compiles on CUDA only)."""
    total_steps = int(config.epochs * train_metadata.total_groups * train_metadata.mean_puzzle_examples / config.global_batch_size)
    if total_steps <= 0:
        raise ConfigError(f"training would run 0 steps: the train split ({train_metadata.total_groups} groups) x epochs ({config.epochs}) "
                          f"holds fewer examples than one global batch ({config.global_batch_size})")
    run_steps = None if evaluate_only else total_steps
    model = create_model(config, train_metadata, world_size=world_size, device=device, total_steps=run_steps)
    optimizers, optimizer_lrs = create_optimizers(config, model, world_size=world_size, total_steps=run_steps)
    state = TrainState(step=0, total_steps=total_steps, model=model, optimizers=optimizers, optimizer_lrs=optimizer_lrs, carry=None)
    if config.ema:
        state.ema = EMAHelper(mu=config.ema_rate)
        state.ema.register(model)
    if config.best_metric is not None:
        state.best = BestTracker(config.best_metric, config.best_metric_mode, config.early_stop_patience)
    return state


def compute_lr(base_lr: float, config: PretrainConfig, train_state: TrainState) -> float:
    """The learning rate of the update that makes ``train_state.step`` (already counted): the
    schedule (``lr_schedule``: the original's cosine, or WSD) at that step, as HRM's and TRM's
    loops; with ``urm_train_loop``, at the step before, as URM's ``train_batch`` reads the schedule
    before counting the step (so the first update runs at lr(0), 0 during warm-up). With
    ``lr_schedule_clock=budget`` the decay is at least as far along as ``train_state.budget_progress``."""
    step = train_state.step - 1 if config.urm_train_loop else train_state.step
    warmup = round(config.lr_warmup_steps)
    if config.lr_schedule_clock == "budget" and step >= warmup:
        # The step at which the step schedule would have made as much progress as the budget has.
        step = max(step, warmup + train_state.budget_progress * (train_state.total_steps - warmup))
    if config.lr_schedule == "wsd":
        return wsd_schedule_lr_lambda(step, base_lr=base_lr, num_warmup_steps=warmup, num_training_steps=train_state.total_steps,
                                      min_ratio=config.lr_min_ratio, decay_fraction=config.lr_decay_fraction)
    return cosine_schedule_with_warmup_lr_lambda(step, base_lr=base_lr, num_warmup_steps=warmup,
                                                 num_training_steps=train_state.total_steps, min_ratio=config.lr_min_ratio)


def split_micro_batches(batch: Dict[str, torch.Tensor], num: int) -> List[Dict[str, torch.Tensor]]:
    """``num`` consecutive slices of a rank's batch: micro-batch k holds rows ``[k*m, (k+1)*m)``."""
    if num == 1:
        return [batch]
    size = batch["inputs"].shape[0] // num
    return [{k: v[i * size: (i + 1) * size] for k, v in batch.items()} for i in range(num)]


def train_batch(config: PretrainConfig, train_state: TrainState, batch: Dict[str, torch.Tensor], global_batch_size: int,
                rank: int, world_size: int, log: bool = True, log_to: Optional[MetricsReadback] = None) -> Optional[Dict[str, float]]:
    """One optimisation step. Returns rank 0's logged metrics when ``log`` is set, else None;
    with ``log_to`` the step's metric sums wait there on the device instead (training's loop).

    With ``gradient_accumulation_steps`` K > 1 the rank's batch runs as K micro-batches, each with
    its own ACT carry (so a halted row is refilled from the same batch position as at K=1);
    gradients add up over them and the optimizers step once, giving the K=1 result.
    """
    train_state.step += 1
    if train_state.step > train_state.total_steps:  # at most total_steps, as the original
        return None

    device = next(iter(train_state.model.parameters()), torch.empty(0)).device
    if train_state.first_bad_step is None:
        train_state.first_bad_step = torch.zeros((), dtype=torch.int64, device=device)
    micro_batches = split_micro_batches(to_device(batch, device), config.gradient_accumulation_steps)
    if train_state.carry is None:
        train_state.carry = [train_state.model.initial_carry(mb) for mb in micro_batches]  # type: ignore[operator]

    sparse_optimizers = [opt for opt in train_state.optimizers if isinstance(opt, CastedSparseEmbeddingSignSGD_Distributed)]
    total_loss: Optional[torch.Tensor] = None
    metrics: Dict[str, torch.Tensor] = {}
    depth = depth_at(config.depth_schedule, train_state.step, train_state.total_steps)
    for k, micro_batch in enumerate(micro_batches):
        with training_depth(unwrap_compiled(train_state.model).model, depth):
            train_state.carry[k], loss, mb_metrics, _, _ = train_state.model(carry=train_state.carry[k], batch=micro_batch, return_keys=[])
        # Divided by the global batch, so the accumulated gradient is the K=1 gradient.
        ((1 / global_batch_size) * loss).backward()
        if k < len(micro_batches) - 1:
            for opt in sparse_optimizers:
                opt.accumulate()  # the next forward overwrites the embedding's batch rows
        total_loss = loss.detach() if total_loss is None else total_loss + loss.detach()
        metrics = mb_metrics if not metrics else {key: metrics[key] + v for key, v in mb_metrics.items()}
    assert total_loss is not None

    # Remember the first non-finite loss without a device sync; it is read when logging.
    bad = ~torch.isfinite(total_loss)
    train_state.first_bad_step = torch.where(bad & (train_state.first_bad_step == 0), train_state.step, train_state.first_bad_step)

    if world_size > 1:
        all_reduce_grads(list(train_state.model.parameters()))

    lr_this_step = None
    for optim, base_lr in zip(train_state.optimizers, train_state.optimizer_lrs):
        lr_this_step = compute_lr(base_lr, config, train_state)
        for param_group in optim.param_groups:
            param_group["lr"] = lr_this_step
        optim.step()
        optim.zero_grad()
    if train_state.ema is not None:
        train_state.ema.update(train_state.model)

    if not log or not metrics:
        return None
    metric_keys = sorted(metrics.keys())  # same order on every rank
    if log_to is not None:
        log_to.add(metric_keys, stack_metrics(metrics, metric_keys), train_state.step, lr_this_step, global_batch_size)
        return None
    reduced = reduce_metrics(metric_keys, stack_metrics(metrics, metric_keys)[None], rank, world_size,
                             loss_divisor=global_batch_size, keep_count=True)
    if reduced is None:
        return None
    out = {f"train/{k}": v for k, v in reduced[0].items()}
    out["train/lr"] = lr_this_step
    return out


def check_finite(train_state: TrainState, world_size: int) -> Optional[int]:
    """The first step whose loss was non-finite on any rank, or None. Syncs with the device."""
    if train_state.first_bad_step is None:
        return None
    return int(min_nonzero_over_ranks(train_state.first_bad_step, world_size).item()) or None


@dataclass
class Run:
    """What the loop's steps share within one process."""
    config: PretrainConfig
    info: DistInfo
    state: TrainState
    train_loader: Any
    eval_loader: Any
    eval_metadata: PuzzleDatasetMetadata
    evaluators: List[Any]
    epochs_per_iter: int
    total_iters: int
    logger: Any = None  # W&B run (rank 0)
    progress_bar: Any = None  # rank 0
    train_log: Any = None  # rank 0: train_metrics.jsonl (training/train_log.py)
    # Optimizer steps the run will make: the schedule's total_steps counts the batches an
    # epoch would give without dropping incomplete ones; None when only the draws tell.
    expected_steps: Optional[int] = None
    last_saved: Optional[int] = None  # newest step with a resume state on disk
    interval_state_step: Optional[int] = None  # interval-only resume state to drop when a newer one is written
    stop: StopRequest = field(default_factory=StopRequest)  # set by SIGTERM / SIGINT / SIGUSR1
    readback: MetricsReadback = field(default_factory=lambda: MetricsReadback(interval=1))  # steps' metrics waiting on the device
    budget: TimeBudget = field(default_factory=lambda: TimeBudget(None))  # max_train_seconds
    first_step: int = 0  # the step this process started from (0, or the resumed step)
    out_of_time: bool = False  # max_train_seconds reached: this pass's evaluation and save are the last
