"""Train HRM / TRM on a puzzle dataset.

    python pretrain.py data_path=data/sudoku-extreme-1k-aug-1000 epochs=20000 eval_interval=2000 ...
    torchrun --nproc-per-node 8 pretrain.py arch=trm data_paths="[data/arc1concept-aug-1000]" ...
    python pretrain.py ... resume=checkpoints/<project>/<run>      # continue an interrupted run

Config: ``config/cfg_pretrain.yaml`` and ``config/arch/*.yaml`` (Hydra overrides on the command
line). One process per rank under torchrun: NCCL on GPUs, gloo on CPUs.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import pydantic
import torch
import torch.distributed as dist
import tqdm
import yaml
from torch import nn
from torch.utils.data import DataLoader

from dataset.common import DatasetError
from models.ema import EMAHelper
from models.sparse_embedding import CastedSparseEmbeddingSignSGD_Distributed
from puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig, PuzzleDatasetMetadata
from utils import checkpoint as ckpt
from utils.adam_atan2 import AdamATan2
from utils.distributed import DistInfo, broadcast_object, cleanup, init_distributed
from utils.functions import (get_model_source_path, load_model_class, load_state_dict_flexible, strip_compile_prefix,
                             validation_error_line)

DEFAULT_DATA_PATH = "data/arc-aug-1000"


class ConfigError(ValueError):
    """A user mistake in the configuration or command line; printed as one line."""


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

    @pydantic.field_validator("data_paths", mode="before")
    @classmethod
    def _none_is_empty(cls, v):
        return [] if v is None else v

    @pydantic.model_validator(mode="after")
    def _check(self):
        if self.data_path is not None and self.data_paths and self.data_paths != [self.data_path]:
            raise ValueError(f"data_path={self.data_path} and data_paths={self.data_paths} disagree; give one of them")
        if not self.data_paths:
            self.data_paths = [self.data_path or DEFAULT_DATA_PATH]
        if self.data_path is None and len(self.data_paths) == 1:
            self.data_path = self.data_paths[0]
        for name in ("global_batch_size", "epochs", "log_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.eval_interval is not None and (self.eval_interval <= 0 or self.epochs % self.eval_interval):
            raise ValueError(f"eval_interval ({self.eval_interval}) must be a positive divisor of epochs ({self.epochs})")
        if self.checkpoint_interval_steps < 0:
            raise ValueError(f"checkpoint_interval_steps must be >= 0, got {self.checkpoint_interval_steps}")
        return self


def parse_config(raw: Dict[str, Any]) -> PretrainConfig:
    """Validate a composed config dict; errors become one :class:`ConfigError` line."""
    try:
        return PretrainConfig(**raw)
    except pydantic.ValidationError as e:
        raise ConfigError(f"config: {validation_error_line(e)}") from None


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


# Keys that may differ between a run and its resumption.
RESUME_MAY_CHANGE = {"resume", "checkpoint_interval_steps", "log_interval", "eval_save_outputs", "load_checkpoint",
                     "checkpoint_path", "project_name", "run_name"}


def check_resume_config(config: PretrainConfig, saved: Dict[str, Any]) -> None:
    now = config.model_dump()
    changed = sorted(k for k in set(now) | set(saved) if k not in RESUME_MAY_CHANGE and now.get(k) != saved.get(k))
    if changed:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
        raise ConfigError(f"resume: config differs from the run being resumed ({details}); resume with the original settings")


def load_synced_config(raw: Dict[str, Any], info: DistInfo) -> PretrainConfig:
    """Build the config on rank 0 (names are random) and give every rank the same one."""
    payload: Any = None
    if info.rank == 0:
        try:
            config = parse_config(raw)
            if config.global_batch_size % info.world_size:
                raise ConfigError(f"global_batch_size ({config.global_batch_size}) is not divisible by the number of processes ({info.world_size})")
            if config.resume is not None:
                folder, step = ckpt.resolve_resume(config.resume)
                with open(os.path.join(folder, "all_config.yaml")) as f:
                    saved = yaml.safe_load(f)
                # Same names and folder as the run being resumed unless given explicitly.
                for key in ("project_name", "run_name", "checkpoint_path"):
                    if getattr(config, key) is None:
                        setattr(config, key, saved.get(key))
                check_resume_config(config, saved)
                saved_world = torch.load(ckpt.train_state_paths(folder, step, 0)[0], map_location="cpu", weights_only=False, mmap=True)["world_size"]
                if saved_world != info.world_size:
                    raise ConfigError(f"resume: the run used {saved_world} process(es), this one has {info.world_size}; "
                                      "resume with the same number of processes")
            payload = fill_names(config)
        except (ConfigError, ValueError, OSError) as e:
            payload = ConfigError(str(e))
    payload = broadcast_object(payload, info)
    if isinstance(payload, Exception):
        raise payload
    return payload


# ---------------------------------------------------------------------------------------------
# Data, model, optimizers


def create_dataloader(config: PretrainConfig, split: str, rank: int, world_size: int, **kwargs):
    """A DataLoader over ``PuzzleDataset`` (one persistent worker) and the split's metadata."""
    paths = config.data_paths_test if (split == "test" and config.data_paths_test) else config.data_paths
    dataset = PuzzleDataset(PuzzleDatasetConfig(seed=config.seed, dataset_paths=paths, rank=rank, num_replicas=world_size, **kwargs), split=split)
    dataloader = DataLoader(dataset, batch_size=None, num_workers=1, prefetch_factor=8, persistent_workers=True,
                            pin_memory=torch.cuda.is_available(),
                            generator=torch.Generator())  # keeps the global torch RNG untouched (exact resume)
    return dataloader, dataset.metadata


def create_model(config: PretrainConfig, train_metadata: PuzzleDatasetMetadata, world_size: int, device=None):
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model_cfg = dict(**config.arch.__pydantic_extra__,  # type: ignore[arg-type]
                     batch_size=config.global_batch_size // world_size,
                     vocab_size=train_metadata.vocab_size,
                     seq_len=train_metadata.seq_len,
                     num_puzzle_identifiers=train_metadata.num_puzzle_identifiers,
                     causal=False)
    try:
        model_cls = load_model_class(config.arch.name)
        loss_head_cls = load_model_class(config.arch.loss.name)
    except ValueError as e:
        raise ConfigError(f"arch: {e}") from None

    with torch.device(device):
        try:
            model: nn.Module = model_cls(model_cfg)
            model = loss_head_cls(model, **config.arch.loss.__pydantic_extra__)  # type: ignore[arg-type]
        except (ValueError, TypeError) as e:
            raise ConfigError(f"arch: {e}") from None
        load_checkpoint(model, config)
        if config.freeze_weights:
            model.requires_grad_(False)  # only the puzzle embedding (a buffer with its own grad) trains
        if world_size > 1:
            with torch.no_grad():
                for tensor in list(model.parameters()) + list(model.buffers()):
                    dist.broadcast(tensor, src=0)
        if device.type == "cuda" and "DISABLE_COMPILE" not in os.environ:
            model = torch.compile(model)  # type: ignore[assignment]

    inner = unwrap(model)
    has_puzzle_emb = getattr(inner.model.config, "puzzle_emb_ndim", 0) > 0
    adam = lambda: AdamATan2(model.parameters(), lr=0, weight_decay=config.weight_decay, betas=(config.beta1, config.beta2))  # noqa: E731
    signsgd = lambda: CastedSparseEmbeddingSignSGD_Distributed(inner.model.puzzle_emb.buffers(), lr=0,  # noqa: E731
                                                               weight_decay=config.puzzle_emb_weight_decay, world_size=world_size)
    if not has_puzzle_emb:
        if config.freeze_weights:
            raise ConfigError("freeze_weights=True trains only the puzzle embedding, but arch.puzzle_emb_ndim is 0")
        return model, [adam()], [config.lr]
    if config.freeze_weights:
        return model, [signsgd()], [config.puzzle_emb_lr]
    return model, [signsgd(), adam()], [config.puzzle_emb_lr, config.lr]


def unwrap(model: nn.Module) -> nn.Module:
    """The loss head under a ``torch.compile`` wrapper."""
    return getattr(model, "_orig_mod", model)


def load_checkpoint(model: nn.Module, config: PretrainConfig) -> None:
    """Initial weights from ``config.load_checkpoint``; a puzzle-embedding table of another
    shape is replaced by the mean of its rows (new puzzles start from the average)."""
    if config.load_checkpoint is None:
        return
    print(f"Loading checkpoint {config.load_checkpoint}")
    if not os.path.isfile(config.load_checkpoint):
        raise ConfigError(f"load_checkpoint={config.load_checkpoint}: no such file")
    state_dict = strip_compile_prefix(torch.load(config.load_checkpoint, map_location="cpu", weights_only=True))
    name = "model.inner.puzzle_emb.weights"
    expected = model.state_dict().get(name)
    if expected is not None and name in state_dict and state_dict[name].shape != expected.shape:
        print(f"Resetting puzzle embedding as shape is different. Found {tuple(state_dict[name].shape)}, Expected {tuple(expected.shape)}")
        state_dict[name] = state_dict[name].mean(dim=0, keepdim=True).expand(expected.shape).contiguous()
    try:
        load_state_dict_flexible(model, state_dict, source=f"load_checkpoint={config.load_checkpoint}")
    except ValueError as e:
        raise ConfigError(str(e)) from None


@dataclass
class TrainState:
    model: nn.Module
    optimizers: Sequence[torch.optim.Optimizer]
    optimizer_lrs: Sequence[float]
    carry: Any
    step: int
    total_steps: int
    # Position in the data, for exact resume: completed train passes, batches into this one.
    iters_done: int = 0
    batches_in_iter: int = 0
    ema: Optional[EMAHelper] = None
    # Device-side record of the first step with a non-finite loss (0: none); read only when logging.
    first_bad_step: Optional[torch.Tensor] = field(default=None, repr=False)


def init_train_state(config: PretrainConfig, train_metadata: PuzzleDatasetMetadata, world_size: int = 1, device=None) -> TrainState:
    total_steps = int(config.epochs * train_metadata.total_groups * train_metadata.mean_puzzle_examples / config.global_batch_size)
    if total_steps <= 0:
        raise ConfigError(f"training would run 0 steps: the train split ({train_metadata.total_groups} groups) x epochs ({config.epochs}) "
                          f"holds fewer examples than one global batch ({config.global_batch_size})")
    model, optimizers, optimizer_lrs = create_model(config, train_metadata, world_size=world_size, device=device)
    state = TrainState(step=0, total_steps=total_steps, model=model, optimizers=optimizers, optimizer_lrs=optimizer_lrs, carry=None)
    if config.ema:
        state.ema = EMAHelper(mu=config.ema_rate)
        state.ema.register(model)
    return state


def cosine_schedule_with_warmup_lr_lambda(current_step: int, *, base_lr: float, num_warmup_steps: int, num_training_steps: int,
                                          min_ratio: float = 0.0, num_cycles: float = 0.5) -> float:
    if current_step < num_warmup_steps:
        return base_lr * float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    return base_lr * (min_ratio + max(0.0, (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))))


def compute_lr(base_lr: float, config: PretrainConfig, train_state: TrainState) -> float:
    return cosine_schedule_with_warmup_lr_lambda(train_state.step, base_lr=base_lr, num_warmup_steps=round(config.lr_warmup_steps),
                                                 num_training_steps=train_state.total_steps, min_ratio=config.lr_min_ratio)


# ---------------------------------------------------------------------------------------------
# Steps


def _to_device(batch: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _all_reduce_grads(params: List[torch.Tensor]) -> None:
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


def train_batch(config: PretrainConfig, train_state: TrainState, batch: Dict[str, torch.Tensor], global_batch_size: int,
                rank: int, world_size: int, log: bool = True) -> Optional[Dict[str, float]]:
    """One optimisation step. Returns rank 0's logged metrics when ``log`` is set, else None."""
    train_state.step += 1
    if train_state.step > train_state.total_steps:  # at most total_steps, as the original
        return None

    device = next(iter(train_state.model.parameters()), torch.empty(0)).device
    if train_state.first_bad_step is None:
        train_state.first_bad_step = torch.zeros((), dtype=torch.int64, device=device)
    batch = _to_device(batch, device)
    if train_state.carry is None:
        train_state.carry = train_state.model.initial_carry(batch)  # type: ignore[operator]

    train_state.carry, loss, metrics, _, _ = train_state.model(carry=train_state.carry, batch=batch, return_keys=[])
    ((1 / global_batch_size) * loss).backward()

    # Remember the first non-finite loss without a device sync; it is read when logging.
    bad = ~torch.isfinite(loss.detach())
    train_state.first_bad_step = torch.where(bad & (train_state.first_bad_step == 0), train_state.step, train_state.first_bad_step)

    if world_size > 1:
        _all_reduce_grads(list(train_state.model.parameters()))

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
    metric_values = torch.stack([metrics[k].to(torch.float64) for k in metric_keys])
    if world_size > 1:
        dist.reduce(metric_values, dst=0)
    if rank != 0:
        return None
    values = metric_values.cpu().numpy()
    reduced = dict(zip(metric_keys, values))
    count = max(reduced["count"], 1)
    out = {f"train/{k}": float(v / (global_batch_size if k.endswith("loss") else count)) for k, v in reduced.items()}
    out["train/lr"] = lr_this_step
    return out


def check_finite(train_state: TrainState, world_size: int) -> Optional[int]:
    """The first step whose loss was non-finite on any rank, or None. Syncs with the device."""
    if train_state.first_bad_step is None:
        return None
    flag = train_state.first_bad_step.clone()
    if world_size > 1:
        # Smallest non-zero step over ranks: encode "none" as a large number for MIN.
        flag = torch.where(flag == 0, torch.iinfo(torch.int64).max, flag)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        flag = torch.where(flag == torch.iinfo(torch.int64).max, 0, flag)
    step = int(flag.item())
    return step or None


def create_evaluators(config: PretrainConfig, eval_metadata: PuzzleDatasetMetadata) -> List[Any]:
    paths = config.data_paths_test if config.data_paths_test else config.data_paths
    evaluators = []
    for cfg in config.evaluators:
        try:
            cls = load_model_class(cfg.name, "evaluators.")
        except ValueError as e:
            raise ConfigError(f"evaluators: {e}") from None
        for data_path in paths:
            evaluators.append(cls(data_path=data_path, eval_metadata=eval_metadata, **cfg.__pydantic_extra__))  # type: ignore[arg-type]
    return evaluators


def evaluate(config: PretrainConfig, train_state: TrainState, eval_loader, eval_metadata: PuzzleDatasetMetadata,
             evaluators: Sequence[Any] = (), rank: int = 0, world_size: int = 1, cpu_group=None) -> Optional[Dict[str, Any]]:
    """Run the test split; returns ``{set: {metric: mean}}`` plus evaluator results on rank 0.

    Each test batch starts from a fresh carry and runs until every row halted (in eval mode
    that is exactly ``halt_max_steps`` segments).
    """
    if isinstance(evaluators, int):  # HRM-style call evaluate(config, state, loader, metadata, rank, world_size)
        evaluators, rank, world_size = (), evaluators, rank
    model = train_state.model
    device = next(iter(model.parameters()), torch.empty(0)).device
    halt_max_steps = unwrap(model).model.config.halt_max_steps  # type: ignore[union-attr]

    reduced_metrics: Optional[Dict[str, Any]] = None
    with torch.inference_mode():
        return_keys = set(config.eval_save_outputs)
        for evaluator in evaluators:
            evaluator.begin_eval()
            return_keys.update(evaluator.required_outputs)

        set_ids = {k: idx for idx, k in enumerate(eval_metadata.sets)}
        save_preds: Dict[str, List[torch.Tensor]] = {}
        metric_keys: List[str] = []
        metric_values = None

        batches = eval_loader if rank != 0 else tqdm.tqdm(eval_loader, desc="eval", leave=False, dynamic_ncols=True)
        for set_name, batch, _global_batch_size in batches:
            batch = _to_device(batch, device)
            carry = model.initial_carry(batch)  # type: ignore[operator]
            # Eval rows halt exactly at halt_max_steps: run that many segments, check once.
            for _ in range(halt_max_steps):
                carry, _, metrics, preds, all_finish = model(carry=carry, batch=batch, return_keys=return_keys)
            while not bool(all_finish):
                carry, _, metrics, preds, all_finish = model(carry=carry, batch=batch, return_keys=return_keys)

            for collection in (batch, preds):
                for k, v in collection.items():
                    if k in config.eval_save_outputs:
                        save_preds.setdefault(k, []).append(v.cpu())
            for evaluator in evaluators:
                evaluator.update_batch(batch, preds)

            if metric_values is None:
                metric_keys = sorted(metrics.keys())
                metric_values = torch.zeros((len(set_ids), len(metric_keys)), dtype=torch.float64, device=device)
            metric_values[set_ids[set_name]] += torch.stack([metrics[k].to(torch.float64) for k in metric_keys])

        if config.checkpoint_path is not None and save_preds:
            path = os.path.join(config.checkpoint_path, f"step_{train_state.step}_all_preds.{rank}")
            ckpt.atomic_torch_save({k: torch.cat(v, dim=0) for k, v in save_preds.items()}, path)
        del save_preds

        if metric_values is not None:
            if world_size > 1:
                dist.reduce(metric_values, dst=0)
            if rank == 0:
                values = metric_values.cpu().numpy()
                reduced_metrics = {}
                for set_name, set_id in set_ids.items():
                    m = dict(zip(metric_keys, values[set_id]))
                    count = max(m.pop("count"), 1)
                    reduced_metrics[set_name] = {k: float(v / count) for k, v in m.items()}

        for evaluator in evaluators:
            save_path = None
            if config.checkpoint_path is not None:
                save_path = os.path.join(config.checkpoint_path, f"evaluator_{evaluator.__class__.__name__}_step_{train_state.step}")
            metrics = evaluator.result(save_path, rank=rank, world_size=world_size, group=cpu_group)
            if rank == 0 and metrics is not None:
                reduced_metrics = {**(reduced_metrics or {}), **metrics}
    return reduced_metrics


# ---------------------------------------------------------------------------------------------
# Saving and resuming


def model_state_dict(train_state: TrainState) -> Dict[str, torch.Tensor]:
    """Weights as saved in ``step_N``: original key names, no ``_orig_mod.`` prefix."""
    return strip_compile_prefix(unwrap(train_state.model).state_dict())


def save_code_and_config(config: PretrainConfig) -> None:
    if config.checkpoint_path is None:
        return
    os.makedirs(config.checkpoint_path, exist_ok=True)
    sources = [get_model_source_path(config.arch.name), get_model_source_path(config.arch.loss.name)]
    models_dir = os.path.dirname(get_model_source_path(config.arch.loss.name))
    sources += [os.path.join(models_dir, "act.py"), os.path.join(models_dir, "layers.py")]  # what the model file builds on
    for path in sources:
        shutil.copy(path, os.path.join(config.checkpoint_path, os.path.basename(path)))
    ckpt.atomic_write_text(os.path.join(config.checkpoint_path, "all_config.yaml"), yaml.dump(config.model_dump()))


def save_train_state(config: PretrainConfig, train_state: TrainState) -> None:
    """The original's checkpoint: model weights as ``step_N`` (EMA weights when ``ema``)."""
    if config.checkpoint_path is None:
        return
    ckpt.atomic_torch_save(model_state_dict(train_state), os.path.join(config.checkpoint_path, f"step_{train_state.step}"))


def _carry_to_dict(carry) -> Optional[Dict[str, Any]]:
    if carry is None:
        return None
    return {"z_H": carry.inner_carry.z_H, "z_L": carry.inner_carry.z_L, "steps": carry.steps, "halted": carry.halted,
            "current_data": dict(carry.current_data)}


def _carry_from_dict(model: nn.Module, d: Optional[Dict[str, Any]], device):
    if d is None:
        return None
    d = {k: (v.to(device) if torch.is_tensor(v) else {kk: vv.to(device) for kk, vv in v.items()}) for k, v in d.items()}
    carry = model.initial_carry(d["current_data"])  # type: ignore[operator]
    carry.inner_carry.z_H, carry.inner_carry.z_L = d["z_H"], d["z_L"]
    carry.steps, carry.halted, carry.current_data = d["steps"], d["halted"], d["current_data"]
    return carry


def save_resume_state(config: PretrainConfig, train_state: TrainState, info: DistInfo) -> None:
    """Everything needed to continue exactly: rank 0 writes the shared part, each rank its own."""
    if config.checkpoint_path is None:
        return
    shared_path, rank_path = ckpt.train_state_paths(config.checkpoint_path, train_state.step, info.rank)
    ckpt.atomic_torch_save({
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state() if info.device.type == "cuda" else None,
        "carry": _carry_to_dict(train_state.carry),
    }, rank_path)
    if info.world_size > 1:
        dist.barrier(group=info.cpu_group)  # all rank files exist before rank 0 publishes the step
    if info.rank == 0:
        ckpt.atomic_torch_save({
            "format": ckpt.TRAIN_STATE_FORMAT,
            "config": config.model_dump(),
            "world_size": info.world_size,
            "step": train_state.step,
            "total_steps": train_state.total_steps,
            "iters_done": train_state.iters_done,
            "batches_in_iter": train_state.batches_in_iter,
            "model": strip_compile_prefix(unwrap(train_state.model).state_dict()),
            "optimizers": [opt.state_dict() for opt in train_state.optimizers],
            "ema": train_state.ema.state_dict() if train_state.ema is not None else None,
        }, shared_path)


def restore_resume_state(train_state: TrainState, shared: Dict[str, Any], own: Dict[str, Any], info: DistInfo) -> None:
    load_state_dict_flexible(train_state.model, shared["model"], source="resume state")
    for opt, sd in zip(train_state.optimizers, shared["optimizers"]):
        opt.load_state_dict(sd)
    if train_state.ema is not None and shared["ema"] is not None:
        train_state.ema.load_state_dict({k: v.to(info.device) for k, v in shared["ema"].items()})
    train_state.step = shared["step"]
    train_state.total_steps = shared["total_steps"]
    train_state.iters_done = shared["iters_done"]
    train_state.batches_in_iter = shared["batches_in_iter"]
    train_state.carry = _carry_from_dict(train_state.model, own["carry"], info.device)
    torch.set_rng_state(own["rng_torch"])
    if own.get("rng_cuda") is not None and info.device.type == "cuda":
        torch.cuda.set_rng_state(own["rng_cuda"])


def write_metrics_line(config: PretrainConfig, step: int, metrics: Dict[str, Any]) -> None:
    """Append evaluation metrics to ``<checkpoint_path>/eval_metrics.jsonl`` (readable without W&B)."""
    if config.checkpoint_path is None:
        return
    os.makedirs(config.checkpoint_path, exist_ok=True)
    with open(os.path.join(config.checkpoint_path, "eval_metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")


def _flatten(metrics: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update({f"{k}/{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------------------------------------
# Main loop


def launch(raw_config: Dict[str, Any]) -> PretrainConfig:
    """Run a whole training job from a composed config dict; returns the final config."""
    info = init_distributed()
    try:
        return _run(raw_config, info)
    finally:
        cleanup()


def _run(raw_config: Dict[str, Any], info: DistInfo) -> PretrainConfig:
    rank, world_size = info.rank, info.world_size
    config = load_synced_config(raw_config, info)
    torch.random.manual_seed(config.seed + rank)

    resume = None
    if config.resume is not None:
        folder, step = ckpt.resolve_resume(config.resume)
        resume = ckpt.load_train_state(folder, step, rank, map_location=info.device)

    train_epochs_per_iter = config.eval_interval if config.eval_interval is not None else config.epochs
    total_iters = config.epochs // train_epochs_per_iter
    iters_done = resume[0]["iters_done"] if resume else 0
    batches_done = resume[0]["batches_in_iter"] if resume else 0

    train_loader, train_metadata = create_dataloader(config, "train", test_set_mode=False, epochs_per_iter=train_epochs_per_iter,
                                                     global_batch_size=config.global_batch_size, rank=rank, world_size=world_size,
                                                     start_iter=iters_done, skip_batches=batches_done)
    eval_loader, eval_metadata = create_dataloader(config, "test", test_set_mode=True, epochs_per_iter=1,
                                                   global_batch_size=config.global_batch_size, rank=rank, world_size=world_size)
    evaluators = create_evaluators(config, eval_metadata)

    train_state = init_train_state(config, train_metadata, world_size=world_size, device=info.device)
    if resume:
        restore_resume_state(train_state, resume[0], resume[1], info)
        if rank == 0:
            print(f"Resumed from {config.resume} at step {train_state.step} (pass {iters_done + 1}, batch {batches_done})")

    progress_bar = None
    if rank == 0:
        from utils.wandb_logging import init_wandb
        n_params = sum(x.numel() for x in train_state.model.parameters())
        print(f"{config.arch.name.split('@')[-1]}: {n_params / 1e6:.2f}M parameters, {train_state.total_steps} steps, "
              f"device {info.device}, {world_size} process(es); checkpoints in {config.checkpoint_path}")
        if info.device.type == "cpu" and config.arch.__pydantic_extra__.get("forward_dtype", "bfloat16") == "bfloat16":
            print("note: bfloat16 matmuls are slow on most CPUs (7x slower than float32 on this project's test machine); "
                  "for speed add +arch.forward_dtype=float32 (HRM) or arch.forward_dtype=float32 (TRM)")
        run = init_wandb(config.project_name, config.run_name, config.model_dump())  # type: ignore[arg-type]
        if not resume:
            run.log({"num_params": n_params}, step=0)
        save_code_and_config(config)
        progress_bar = tqdm.tqdm(total=train_state.total_steps, initial=train_state.step, desc="train", dynamic_ncols=True)

    last_saved = resume[0]["step"] if resume else None
    interval_state_step: Optional[int] = None  # interval-only train state to drop when a newer one is written

    def stop_if_nonfinite():
        bad = check_finite(train_state, world_size)
        if bad is not None:
            kept = f"the last checkpoint (step {last_saved}) is intact" if last_saved is not None else "no checkpoint had been written"
            raise FloatingPointError(f"training loss became non-finite at step {bad}; stopping without saving ({kept})")

    for iter_id in range(train_state.iters_done, total_iters):
        if rank == 0:
            print(f"[Rank {rank}, World Size {world_size}]: Epoch {iter_id * train_epochs_per_iter}")

        train_state.model.train()
        for set_name, batch, global_batch_size in train_loader:
            log = (train_state.step + 1) % config.log_interval == 0
            metrics = train_batch(config, train_state, batch, global_batch_size, rank=rank, world_size=world_size, log=log)
            train_state.batches_in_iter += 1
            if log:
                stop_if_nonfinite()
            if rank == 0 and metrics is not None:
                run.log(metrics, step=train_state.step)
                progress_bar.set_postfix(loss=f"{metrics.get('train/lm_loss', float('nan')):.4f}", refresh=False)  # type: ignore[union-attr]
            if progress_bar is not None:
                progress_bar.update(min(train_state.step, train_state.total_steps) - progress_bar.n)

            if config.checkpoint_interval_steps and train_state.step % config.checkpoint_interval_steps == 0:
                stop_if_nonfinite()
                save_resume_state(config, train_state, info)
                if rank == 0 and interval_state_step is not None:
                    ckpt.remove_train_state(config.checkpoint_path, interval_state_step, world_size)  # type: ignore[arg-type]
                interval_state_step, last_saved = train_state.step, train_state.step

        train_state.iters_done, train_state.batches_in_iter = iter_id + 1, 0
        stop_if_nonfinite()

        is_last = iter_id == total_iters - 1
        if iter_id >= (config.min_eval_interval or 0):
            train_state.model.eval()
            ema_ctx = train_state.ema.applied(train_state.model) if train_state.ema is not None else contextlib.nullcontext()
            with ema_ctx:  # evaluate (and save) the averaged weights
                metrics = evaluate(config, train_state, eval_loader, eval_metadata, evaluators, rank=rank, world_size=world_size,
                                   cpu_group=info.cpu_group)
                if rank == 0 and metrics is not None:
                    run.log(_flatten(metrics), step=train_state.step)
                    write_metrics_line(config, train_state.step, metrics)
                    tqdm.tqdm.write(f"step {train_state.step}: " + json.dumps(metrics))
                if rank == 0 and (config.checkpoint_every_eval or is_last):
                    save_train_state(config, train_state)
        elif is_last and rank == 0:
            with (train_state.ema.applied(train_state.model) if train_state.ema is not None else contextlib.nullcontext()):
                save_train_state(config, train_state)

        if config.checkpoint_every_eval or is_last or config.checkpoint_interval_steps:
            save_resume_state(config, train_state, info)
            if rank == 0 and interval_state_step is not None and interval_state_step != train_state.step:
                ckpt.remove_train_state(config.checkpoint_path, interval_state_step, world_size)  # type: ignore[arg-type]
            interval_state_step, last_saved = None, train_state.step

    if rank == 0:
        progress_bar.close()  # type: ignore[union-attr]
        run.finish()
    return config


def user_error_message(e: BaseException) -> str:
    """One line for the user. Errors raised in a DataLoader worker arrive wrapped in the worker's
    traceback text; keep only the original message (its last line)."""
    text = str(e).strip()
    if "Original Traceback" in text:
        text = re.sub(r"^[\w.]+: ", "", text.splitlines()[-1])
    return text


def main() -> None:
    import hydra
    from omegaconf import OmegaConf

    @hydra.main(config_path="config", config_name="cfg_pretrain", version_base=None)
    def _entry(hydra_config):
        raw = OmegaConf.to_container(hydra_config, resolve=True)
        try:
            launch(raw)  # type: ignore[arg-type]
        except (ConfigError, DatasetError, FloatingPointError) as e:
            if int(os.environ.get("RANK", "0")) == 0:
                print(f"error: {user_error_message(e)}", file=sys.stderr)
            sys.exit(2)

    _entry()


if __name__ == "__main__":
    main()
