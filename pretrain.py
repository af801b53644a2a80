"""Train HRM / TRM on a puzzle dataset.

    python pretrain.py data_path=data/sudoku-extreme-1k-aug-1000 epochs=20000 eval_interval=2000 ...
    torchrun --nproc-per-node 8 pretrain.py arch=trm data_paths="[data/arc1concept-aug-1000]" ...
    python pretrain.py ... resume=checkpoints/<project>/<run>      # continue an interrupted run

Config: ``config/cfg_pretrain.yaml`` and ``config/arch/*.yaml`` (Hydra overrides on the command
line). One process per rank under torchrun: NCCL on GPUs, gloo on CPUs.

This file holds the config schema and the loop (set-up, resume, train iteration, evaluate, save).
What a run builds from its config is in ``utils/build.py``, the evaluation pass and the metric
reduction in ``utils/evaluation.py``, what a resume state holds in ``utils/checkpoint.py``.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import pydantic
import torch
import tqdm
import yaml
from torch import nn

from dataset.common import DatasetError
from models.ema import EMAHelper
from models.sparse_embedding import CastedSparseEmbeddingSignSGD_Distributed
from puzzle_dataset import PuzzleDatasetMetadata
from utils import checkpoint as ckpt
from utils import validation
from utils.arch_config import normalise_arch_overrides
from utils.best_checkpoint import BestTracker, save_best
from utils.build import create_dataloader, create_evaluators, create_model, create_optimizers
from utils.compile import CompileSetting
from utils.checkpoint import CheckpointError
from utils.config import ConfigError, check_batch_divisible, normalize_data_paths, user_error_message
from utils.distributed import (DEFAULT_DIST_TIMEOUT_S, DistInfo, RankStoppedAnswering, all_reduce_grads, broadcast_object, cleanup,
                               init_distributed, is_peer_failure, min_nonzero_over_ranks, peer_failure_error)
from utils.preemption import StopRequest, signal_name
from utils.progress import progress_bar
from utils.evaluation import evaluate, flatten_metrics, reduce_metrics, stack_metrics, to_device
from utils.functions import unwrap_compiled, validation_error_line
from utils.runs import apply_sweep_job, claim_run_folder, current_sweep_job, nothing_saved
from utils.schedule import cosine_schedule_with_warmup_lr_lambda

DEFAULT_DATA_PATH = "data/arc-aug-1000"


# ---------------------------------------------------------------------------------------------
# Config


class LossConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    name: str


class ArchConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    name: str
    loss: LossConfig


class EvaluatorConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    name: str


class PretrainConfig(pydantic.BaseModel):
    arch: ArchConfig
    # Data: HRM spelling `data_path`, TRM spelling `data_paths`; normalised so both are set.
    data_path: Optional[str] = None
    data_paths: List[str] = []
    data_paths_test: List[str] = []
    evaluators: List[EvaluatorConfig] = []

    global_batch_size: int
    epochs: int
    lr: float
    lr_min_ratio: float
    lr_warmup_steps: int
    weight_decay: float
    beta1: float
    beta2: float
    puzzle_emb_lr: float
    puzzle_emb_weight_decay: float

    project_name: Optional[str] = None
    run_name: Optional[str] = None
    load_checkpoint: Optional[str] = None
    checkpoint_path: Optional[str] = None

    seed: int = 0
    checkpoint_every_eval: bool = False
    eval_interval: Optional[int] = None
    min_eval_interval: Optional[int] = 0
    eval_save_outputs: List[str] = []
    ema: bool = False
    ema_rate: float = 0.999
    freeze_weights: bool = False

    # Added by this project.
    resume: Optional[str] = None
    checkpoint_interval_steps: int = 0
    log_interval: int = 1
    wandb_group: Optional[str] = None
    compile: CompileSetting = "auto"  # torch.compile: auto (CUDA always, CPU for long runs), true, false
    dist_timeout_s: float = DEFAULT_DIST_TIMEOUT_S
    # One GPU (README "Training on one GPU"): micro-batches per optimizer step, best checkpoint and
    # early stopping, cheaper evaluation during training.
    gradient_accumulation_steps: int = 1
    best_metric: Optional[str] = None
    best_metric_mode: Literal["max", "min"] = "max"
    early_stop_patience: Optional[int] = None
    eval_max_examples: Optional[int] = None
    eval_full_at_end: bool = False
    eval_global_batch_size: Optional[int] = None

    @pydantic.field_validator("data_paths", mode="before")
    @classmethod
    def _none_is_empty(cls, v):
        return [] if v is None else v

    @pydantic.model_validator(mode="after")
    def _check(self):
        self.data_paths = normalize_data_paths(self.data_path, self.data_paths) or [DEFAULT_DATA_PATH]
        if self.data_path is None and len(self.data_paths) == 1:
            self.data_path = self.data_paths[0]
        for name in ("global_batch_size", "epochs", "log_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.eval_interval is not None and (self.eval_interval <= 0 or self.epochs % self.eval_interval):
            raise ValueError(f"eval_interval ({self.eval_interval}) must be a positive divisor of epochs ({self.epochs})")
        if self.checkpoint_interval_steps < 0:
            raise ValueError(f"checkpoint_interval_steps must be >= 0, got {self.checkpoint_interval_steps}")
        if self.dist_timeout_s <= 0:
            raise ValueError(f"dist_timeout_s must be positive, got {self.dist_timeout_s}")
        validation.check_training_values(self)
        validation.check_save_outputs(self.eval_save_outputs, "eval_save_outputs")
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be >= 1 (micro-batches per optimizer step), got {self.gradient_accumulation_steps}")
        for name in ("eval_max_examples", "eval_global_batch_size", "early_stop_patience"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number or null, got {getattr(self, name)}")
        if self.early_stop_patience is not None and self.best_metric is None:
            raise ValueError("early_stop_patience needs best_metric (the metric whose improvement it waits for), e.g. best_metric=all/exact_accuracy")
        return self


def parse_config(raw: Dict[str, Any]) -> PretrainConfig:
    """Validate a composed config dict; errors become one :class:`ConfigError` line."""
    try:
        validation.check_known_keys(raw, PretrainConfig.model_fields)
    except ValueError as e:
        raise ConfigError(str(e)) from None  # already says "config: ..."
    try:
        return PretrainConfig(**raw)
    except pydantic.ValidationError as e:
        raise ConfigError(f"config: {validation_error_line(e)}") from None
    except ValueError as e:
        raise ConfigError(f"config: {e}") from None


def fill_names(config: PretrainConfig) -> PretrainConfig:
    """Default project/run names and checkpoint folder, as the original names them."""
    import coolname

    if config.project_name is None:
        config.project_name = f"{os.path.basename(config.data_paths[0].rstrip('/')).capitalize()} ACT-torch"
    if config.run_name is None:
        config.run_name = f"{config.arch.name.split('@')[-1]} {coolname.generate_slug(2)}"
    if config.checkpoint_path is None:
        config.checkpoint_path = os.path.join("checkpoints", config.project_name, config.run_name)
    return config


def check_batch_split(config: PretrainConfig, world_size: int) -> None:
    """Every rank gets an equal share of the global batch, cut into equal micro-batches."""
    check_batch_divisible(config.global_batch_size, world_size)
    parts = world_size * config.gradient_accumulation_steps
    if config.global_batch_size % parts:
        raise ConfigError(f"global_batch_size ({config.global_batch_size}) is not divisible by processes ({world_size}) x "
                          f"gradient_accumulation_steps ({config.gradient_accumulation_steps}) = {parts}; "
                          "every micro-batch must hold the same number of examples")
    eval_batch = eval_batch_size(config)
    if eval_batch % world_size:
        raise ConfigError(f"eval_global_batch_size ({eval_batch}) is not divisible by the number of processes ({world_size})")


def eval_batch_size(config: PretrainConfig) -> int:
    return config.eval_global_batch_size or config.global_batch_size


def load_synced_config(raw: Dict[str, Any], info: DistInfo, held: contextlib.ExitStack) -> PretrainConfig:
    """Build the config on rank 0 (names are random) and give every rank the same one. Rank 0
    locks the run folder for the run's lifetime (``held`` releases it)."""
    payload: Any = None
    if info.rank == 0:
        try:
            config = parse_config(raw)
            check_batch_split(config, info.world_size)
            if config.resume is not None and nothing_saved(config.resume):
                print(f"resume={config.resume}: that run stopped before saving any weights or resume state; starting from step 0")
                config.checkpoint_path, config.resume = config.checkpoint_path or config.resume, None
            if config.resume is not None:
                folder, _step = ckpt.resolve_resume(config.resume)
                with open(os.path.join(folder, "all_config.yaml")) as f:
                    saved = yaml.safe_load(f)
                # Same names and folder as the run being resumed unless given explicitly.
                for key in ("project_name", "run_name", "checkpoint_path"):
                    if getattr(config, key) is None:
                        setattr(config, key, saved.get(key))
                # Keys added to the config after the saved run started count as their defaults there.
                defaults = {k: f.default for k, f in PretrainConfig.model_fields.items() if not f.is_required()}
                ckpt.check_resume_config(config.model_dump(), saved, defaults)
            payload = fill_names(config)
            lock, notices = claim_run_folder(config.checkpoint_path, config.resume)  # type: ignore[arg-type]
            held.callback(lock.release)
            print(*notices, sep="\n", end="\n" if notices else "")
        except (ConfigError, ValueError, OSError) as e:
            payload = ConfigError(str(e))
    payload = broadcast_object(payload, info)
    if isinstance(payload, Exception):
        raise payload
    return payload


# ---------------------------------------------------------------------------------------------
# Data, model, optimizers


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
    return cosine_schedule_with_warmup_lr_lambda(train_state.step, base_lr=base_lr, num_warmup_steps=round(config.lr_warmup_steps),
                                                 num_training_steps=train_state.total_steps, min_ratio=config.lr_min_ratio)


# ---------------------------------------------------------------------------------------------
# Steps


def split_micro_batches(batch: Dict[str, torch.Tensor], num: int) -> List[Dict[str, torch.Tensor]]:
    """``num`` consecutive slices of a rank's batch: micro-batch k holds rows ``[k*m, (k+1)*m)``."""
    if num == 1:
        return [batch]
    size = batch["inputs"].shape[0] // num
    return [{k: v[i * size: (i + 1) * size] for k, v in batch.items()} for i in range(num)]


def train_batch(config: PretrainConfig, train_state: TrainState, batch: Dict[str, torch.Tensor], global_batch_size: int,
                rank: int, world_size: int, log: bool = True) -> Optional[Dict[str, float]]:
    """One optimisation step. Returns rank 0's logged metrics when ``log`` is set, else None.

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
    for k, micro_batch in enumerate(micro_batches):
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


# ---------------------------------------------------------------------------------------------
# Saving and resuming


def save_train_state(config: PretrainConfig, train_state: TrainState) -> None:
    """The original's checkpoint: model weights as ``step_N`` (EMA weights when ``ema``)."""
    if config.checkpoint_path is None:
        return
    ckpt.atomic_torch_save(ckpt.model_weights(train_state.model), os.path.join(config.checkpoint_path, f"step_{train_state.step}"))


# ---------------------------------------------------------------------------------------------
# Main loop: set-up, resume, train iteration, evaluate, save


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
    last_saved: Optional[int] = None  # newest step with a resume state on disk
    interval_state_step: Optional[int] = None  # interval-only resume state to drop when a newer one is written
    stop: StopRequest = field(default_factory=StopRequest)  # set by SIGTERM / SIGINT / SIGUSR1


class Preempted(Exception):
    """The run stopped on a signal after saving a resume state; ``exit_status`` is 128 + the signal."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


def _dist_timeout_from(raw_config: Dict[str, Any]) -> float:
    """``dist_timeout_s`` is needed to join the process group, before the config can be synced."""
    value = raw_config.get("dist_timeout_s", DEFAULT_DIST_TIMEOUT_S)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"config: dist_timeout_s must be a positive number of seconds, got {value!r}")
    return float(value)


def launch(raw_config: Dict[str, Any]) -> PretrainConfig:
    """Run a whole training job from a composed config dict; returns the final config."""
    info = init_distributed(timeout_s=_dist_timeout_from(raw_config))
    held = contextlib.ExitStack()  # the run folder's lock, held until the run ends
    try:
        return _run(raw_config, info, held)
    except RuntimeError as e:
        if info.world_size > 1 and is_peer_failure(e):
            raise peer_failure_error(e, info, "while training") from None
        raise
    finally:
        held.close()
        cleanup()


def _run(raw_config: Dict[str, Any], info: DistInfo, held: contextlib.ExitStack) -> PretrainConfig:
    config = load_synced_config(raw_config, info, held)
    torch.random.manual_seed(config.seed + info.rank)
    resume = load_resume(config, info)
    run = set_up(config, info, resume)
    run.stop = StopRequest(info.rank).install()
    try:
        for iter_id in range(run.state.iters_done, run.total_iters):
            train_iteration(run, iter_id)
            if evaluate_and_save(run, iter_id):
                break  # early stop
    finally:
        run.stop.uninstall()
        if run.progress_bar is not None:
            run.progress_bar.close()
    if info.rank == 0:
        run.logger.finish()
    return config


def load_resume(config: PretrainConfig, info: DistInfo) -> Optional[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """``(shared, own)`` resume state of this rank, read once; None for a fresh run.

    Rank 0 checks the number of processes, and every rank stops with rank 0's error (a rank
    without its own file only means the run had fewer processes, which rank 0 reports)."""
    if config.resume is None:
        return None
    state, own_error, error = None, None, None
    try:
        state = ckpt.load_train_state(*ckpt.resolve_resume(config.resume), info.rank, map_location=info.device)
        if info.rank == 0 and state[0]["world_size"] != info.world_size:
            error = ConfigError(f"resume: the run used {state[0]['world_size']} process(es), this one has {info.world_size}; "
                                "resume with the same number of processes")
    except (ValueError, OSError) as e:
        own_error = ConfigError(str(e))
        error = own_error if info.rank == 0 else None
    error = broadcast_object(error, info)
    if error is not None or own_error is not None:
        raise error or own_error  # type: ignore[misc]
    return state


def set_up(config: PretrainConfig, info: DistInfo, resume) -> Run:
    """Loaders (at the resumed data position), evaluators, model and optimizers, logging."""
    epochs_per_iter = config.eval_interval if config.eval_interval is not None else config.epochs
    iters_done = resume[0]["iters_done"] if resume else 0
    batches_done = resume[0]["batches_in_iter"] if resume else 0
    common = dict(global_batch_size=config.global_batch_size, rank=info.rank, world_size=info.world_size)
    train_loader, train_metadata = create_dataloader(config, "train", test_set_mode=False, epochs_per_iter=epochs_per_iter,
                                                     start_iter=iters_done, skip_batches=batches_done, **common)
    eval_loader, eval_metadata = create_eval_loader(config, info.rank, info.world_size)
    evaluators = create_evaluators(config, eval_metadata)
    validate_splits(config, train_metadata, eval_loader, eval_metadata, info.rank)

    state = init_train_state(config, train_metadata, world_size=info.world_size, device=info.device)
    if resume:
        ckpt.restore_resume_state(state, resume[0], resume[1], info.device)
        if info.rank == 0:
            print(f"Resumed from {config.resume} at step {state.step} (pass {iters_done + 1}, batch {batches_done})")
    run = Run(config=config, info=info, state=state, train_loader=train_loader, eval_loader=eval_loader, eval_metadata=eval_metadata,
              evaluators=evaluators, epochs_per_iter=epochs_per_iter, total_iters=config.epochs // epochs_per_iter,
              last_saved=resume[0]["step"] if resume else None,
              # A mid-pass state resumed from is replaced by the next one, as in an uninterrupted run.
              interval_state_step=state.step if resume and batches_done else None)
    if info.rank == 0:
        start_logging(run, resumed=resume is not None)
    return run


def validate_splits(config: PretrainConfig, train_metadata: PuzzleDatasetMetadata, eval_loader, eval_metadata: PuzzleDatasetMetadata,
                    rank: int) -> None:
    """Before the first step: the test split fits the model built from the train split, and is
    not empty when evaluations are asked for."""
    test_paths = config.data_paths_test or config.data_paths
    try:
        warning = validation.check_test_split_not_empty(validation.split_size(eval_loader.dataset), test_paths, config.eval_interval)
        validation.check_splits(train_metadata, eval_metadata, eval_loader.dataset, test_paths)
    except DatasetError:
        raise
    except ValueError as e:
        raise DatasetError(str(e)) from None
    if warning and rank == 0:
        print(warning, file=sys.stderr)


def start_logging(run: Run, resumed: bool) -> None:
    """Rank 0: summary line, W&B run, code and config next to the checkpoints, progress bar."""
    from utils.wandb_logging import init_wandb

    config, state, info = run.config, run.state, run.info
    n_params = sum(x.numel() for x in state.model.parameters())
    compiled = "compiled" if unwrap_compiled(state.model) is not state.model else "not compiled"
    print(f"{config.arch.name.split('@')[-1]}: {n_params / 1e6:.2f}M parameters, {state.total_steps} steps, "
          f"device {info.device} ({compiled}, compile={config.compile}), {info.world_size} process(es); checkpoints in {config.checkpoint_path}")
    if info.device.type == "cpu" and config.arch.__pydantic_extra__.get("forward_dtype", "bfloat16") == "bfloat16":
        print("note: bfloat16 matmuls are slow on most CPUs (7x slower than float32 on this project's test machine); "
              "for speed add arch.forward_dtype=float32")
    run.logger = init_wandb(config.project_name, config.run_name, config.model_dump(), group=config.wandb_group)  # type: ignore[arg-type]
    if not resumed:
        run.logger.log({"num_params": n_params}, step=0)
    removed = ckpt.clean_checkpoint_folder(config.checkpoint_path) if config.checkpoint_path else []
    if removed:
        print(f"Removed {len(removed)} file(s) left by an interrupted run from {config.checkpoint_path}: {', '.join(removed[:6])}"
              + (" ..." if len(removed) > 6 else ""))
    ckpt.save_code_and_config(config)
    run.progress_bar = progress_bar(total=state.total_steps, initial=state.step, desc="train", dynamic_ncols=True)


def stop_if_nonfinite(run: Run) -> None:
    bad = check_finite(run.state, run.info.world_size)
    if bad is not None:
        kept = f"the last checkpoint (step {run.last_saved}) is intact" if run.last_saved is not None else "no checkpoint had been written"
        raise FloatingPointError(f"training loss became non-finite at step {bad}; stopping without saving ({kept})")


def train_iteration(run: Run, iter_id: int) -> None:
    """One pass of ``epochs_per_iter`` epochs, with interval resume states on the way."""
    config, state, rank = run.config, run.state, run.info.rank
    if rank == 0:
        print(f"[Rank {rank}, World Size {run.info.world_size}]: Epoch {iter_id * run.epochs_per_iter}")
    state.model.train()
    for _set_name, batch, global_batch_size in run.train_loader:
        log = (state.step + 1) % config.log_interval == 0
        metrics = train_batch(config, state, batch, global_batch_size, rank=rank, world_size=run.info.world_size, log=log)
        state.batches_in_iter += 1
        if log:
            stop_if_nonfinite(run)
        if rank == 0 and metrics is not None:
            run.logger.log(metrics, step=state.step)
            run.progress_bar.set_postfix(loss=f"{metrics.get('train/lm_loss', float('nan')):.4f}", refresh=False)
        if run.progress_bar is not None:
            run.progress_bar.update(min(state.step, state.total_steps) - run.progress_bar.n)
        saved_now = bool(config.checkpoint_interval_steps) and state.step % config.checkpoint_interval_steps == 0
        if saved_now:
            stop_if_nonfinite(run)
            save_resume(run, interval=True)
        stop_if_signalled(run, saved_now)
    state.iters_done, state.batches_in_iter = iter_id + 1, 0
    stop_if_nonfinite(run)


def stop_if_signalled(run: Run, saved_now: bool) -> None:
    """After a step: if any rank got a stop signal, all save this step's resume state (unless it
    was just written) and raise :class:`Preempted` with the line saying how to go on."""
    signum = run.stop.agreed(run.info.world_size, run.info.cpu_group)
    if signum is None or run.state.step >= run.state.total_steps:
        return
    stop_if_nonfinite(run)
    if not saved_now:
        save_resume(run, interval=True)
    config, step = run.config, run.state.step
    raise Preempted(f"stopped by {signal_name(signum)} after step {step} of {run.state.total_steps}; resume state saved in "
                    f"{config.checkpoint_path}. To continue, run the same command with "
                    f"resume={os.path.join(config.checkpoint_path or '.', f'step_{step}')}", exit_status=128 + signum)


def evaluate_and_save(run: Run, iter_id: int) -> bool:
    """After a pass: evaluate (EMA weights when ``ema``), track the best, write ``step_N`` and the
    resume state. Returns True when training stops early (``early_stop_patience``)."""
    config, state, rank = run.config, run.state, run.info.rank
    is_last = iter_id == run.total_iters - 1
    evaluating = iter_id >= (config.min_eval_interval or 0)
    stop_early = False
    if evaluating or (is_last and rank == 0):
        if evaluating:
            state.model.eval()
        with ema_applied(state):
            if evaluating:
                # The final evaluation covers the whole test split when asked; best/early stop then
                # skip it, as it is not comparable with the subset evaluations before it.
                full = is_last and config.eval_full_at_end and config.eval_max_examples is not None
                loader = create_eval_loader(config, rank, run.info.world_size, full=True)[0] if full else run.eval_loader
                started = time.perf_counter()
                metrics = evaluate(config, state, loader, run.eval_metadata, run.evaluators, rank=rank,
                                   world_size=run.info.world_size, cpu_group=run.info.cpu_group)
                if rank == 0 and metrics is not None:
                    metrics["eval/seconds"] = round(time.perf_counter() - started, 3)
                    run.logger.log(flatten_metrics(metrics), step=state.step)
                    ckpt.write_metrics_line(config.checkpoint_path, state.step, metrics)
                    tqdm.tqdm.write(f"step {state.step}: " + json.dumps(metrics))
                if state.best is not None and not full:
                    stop_early = update_best(config, state, metrics, run.info)
            if rank == 0 and (config.checkpoint_every_eval or is_last or stop_early):
                save_train_state(config, state)
    if config.checkpoint_every_eval or is_last or config.checkpoint_interval_steps or stop_early:
        save_resume(run, interval=False)
    if stop_early and rank == 0:
        best = state.best
        assert best is not None
        tqdm.tqdm.write(f"early stop at step {state.step}: {best.metric} did not improve for {best.evals_since_best} evaluation(s); "
                        f"best {best.value} at step {best.step}"
                        + (f", weights in {os.path.join(config.checkpoint_path, 'best')}" if config.checkpoint_path else ""))
    return stop_early


def create_eval_loader(config: PretrainConfig, rank: int, world_size: int, full: bool = False):
    """The test split as evaluated during training: its first ``eval_max_examples`` examples (all
    when ``full`` or unset), in batches of ``eval_global_batch_size``."""
    return create_dataloader(config, "test", test_set_mode=True, epochs_per_iter=1, global_batch_size=eval_batch_size(config),
                             rank=rank, world_size=world_size, max_examples=None if full else config.eval_max_examples)


def update_best(config: PretrainConfig, train_state: TrainState, metrics: Optional[Dict[str, Any]], info: DistInfo) -> bool:
    """Rank 0 records an evaluation in ``train_state.best`` and writes ``best`` when it improved
    (call with the evaluated weights in place); returns, on every rank, whether to stop early."""
    tracker = train_state.best
    assert tracker is not None
    payload: Any = None
    if info.rank == 0:
        try:
            if tracker.update(train_state.step, flatten_metrics(metrics or {})) and config.checkpoint_path is not None:
                save_best(config.checkpoint_path, ckpt.model_weights(train_state.model), tracker)
            payload = tracker.state_dict()
        except ValueError as e:
            payload = ConfigError(str(e))
    payload = broadcast_object(payload, info)
    if isinstance(payload, Exception):
        raise payload
    tracker.load_state_dict(payload)
    return tracker.should_stop


def ema_applied(state: TrainState):
    """Context in which the model holds its EMA weights (when ``ema``), to evaluate and save them."""
    return state.ema.applied(state.model) if state.ema is not None else contextlib.nullcontext()


def save_resume(run: Run, interval: bool) -> None:
    """Write the resume state of this step and drop the previous interval-only one."""
    config, step = run.config, run.state.step
    if config.checkpoint_path is not None:
        ckpt.save_resume_state(config.checkpoint_path, run.state, config.model_dump(), run.info)
        if run.info.rank == 0 and run.interval_state_step is not None and run.interval_state_step != step:
            ckpt.remove_train_state(config.checkpoint_path, run.interval_state_step, run.info.world_size)
    run.interval_state_step = step if interval else None
    run.last_saved = step


def main() -> None:
    import hydra
    from omegaconf import OmegaConf

    @hydra.main(config_path="config", config_name="cfg_pretrain", version_base=None)
    def _entry(hydra_config):
        raw = OmegaConf.to_container(hydra_config, resolve=True)
        job = current_sweep_job(sys.argv[1:])
        if job is not None:  # each job of a multirun writes to its own folder
            raw = apply_sweep_job(raw, job)  # type: ignore[arg-type]
            print(f"sweep job {job.num}: checkpoints in {raw.get('checkpoint_path') or 'the folder of run ' + repr(raw.get('run_name'))}")
        try:
            launch(raw)  # type: ignore[arg-type]
        except (ConfigError, DatasetError, CheckpointError, FloatingPointError) as e:
            if int(os.environ.get("RANK", "0")) == 0:
                print(f"error: {user_error_message(e)}", file=sys.stderr)
            sys.exit(2)
        except Preempted as e:
            if int(os.environ.get("RANK", "0")) == 0:
                print(str(e), file=sys.stderr, flush=True)
            sys.exit(e.exit_status)
        except RankStoppedAnswering as e:
            if e.report:
                print(f"error: {e}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            # After a failed collective, the process group's finalisers can block for seconds: skip them.
            os._exit(1)

    sys.argv = [sys.argv[0], *normalise_arch_overrides(sys.argv[1:])]
    _entry()


if __name__ == "__main__":
    main()
