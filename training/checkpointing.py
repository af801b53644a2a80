"""What a run writes into its checkpoint folder and reads back to resume: the original's ``step_N``
weights, the full resume state (what a train state puts in it; ``training/resume_state.py`` names
and reads its files) on every rank, and the model's source, ``all_config.yaml`` and the datasets'
metadata beside them."""
from __future__ import annotations

import inspect
import os
import shutil
from typing import Any, Dict, Optional, Tuple

import torch
import torch.distributed as dist
import yaml

from training.config import PretrainConfig
from training.resume_state import (TRAIN_STATE_FORMAT, carries_from_saved, carries_to_saved, load_train_state, remove_train_state,
                                   resolve_resume, restore_rng_states, train_state_paths)
from training.state import Run, TrainState
from utils.config import ConfigError
from utils.dataset_metadata import metadata_files
from utils.distributed import DistInfo, broadcast_object
from utils.functions import get_model_source_path, load_model_class, load_state_dict_flexible, strip_compile_prefix, unwrap_compiled
from utils.safe_io import atomic_torch_save, atomic_write, atomic_write_text


def model_weights(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Weights as saved in ``step_N``: original key names, no ``_orig_mod.`` prefix."""
    return strip_compile_prefix(unwrap_compiled(model).state_dict())


def save_train_state(config: PretrainConfig, train_state: TrainState) -> None:
    """The original's checkpoint: model weights as ``step_N`` (EMA weights when ``ema``)."""
    if config.checkpoint_path is None:
        return
    atomic_torch_save(model_weights(train_state.model), os.path.join(config.checkpoint_path, f"step_{train_state.step}"))


def load_resume(config: PretrainConfig, info: DistInfo) -> Optional[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """``(shared, own)`` resume state of this rank, read once; None for a fresh run.

    Rank 0 checks the number of processes, and every rank stops with rank 0's error (a rank
    without its own file only means the run had fewer processes, which rank 0 reports)."""
    if config.resume is None:
        return None
    state, own_error, error = None, None, None
    try:
        state = load_train_state(*resolve_resume(config.resume), info.rank, map_location=info.device)
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


def save_resume(run: Run, interval: bool) -> None:
    """Write the resume state of this step and drop the previous interval-only one."""
    config, step = run.config, run.state.step
    if config.checkpoint_path is not None:
        save_resume_state(config.checkpoint_path, run.state, config.model_dump(), run.info)
        if run.info.rank == 0 and run.interval_state_step is not None and run.interval_state_step != step:
            remove_train_state(config.checkpoint_path, run.interval_state_step, run.info.world_size)
    run.interval_state_step = step if interval else None
    run.last_saved = step


def save_resume_state(checkpoint_path: str, train_state: TrainState, config: Dict[str, Any], info: DistInfo) -> None:
    """Everything needed to continue exactly: rank 0 writes the shared part, each rank its own.

    ``config``: the run's config as a dict; ``info``: this process.
    """
    shared_path, rank_path = train_state_paths(checkpoint_path, train_state.step, info.rank)
    atomic_torch_save({
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state() if info.device.type == "cuda" else None,
        "carry": carries_to_saved(train_state.carry),
    }, rank_path)
    if info.world_size > 1:
        dist.barrier(group=info.cpu_group)  # all rank files exist before rank 0 publishes the step
    if info.rank == 0:
        atomic_torch_save({
            "format": TRAIN_STATE_FORMAT,
            "config": config,
            "world_size": info.world_size,
            "step": train_state.step,
            "total_steps": train_state.total_steps,
            "iters_done": train_state.iters_done,
            "batches_in_iter": train_state.batches_in_iter,
            "model": model_weights(train_state.model),
            "optimizers": [opt.state_dict() for opt in train_state.optimizers],
            "ema": train_state.ema.state_dict() if train_state.ema is not None else None,
            "best": train_state.best.state_dict() if train_state.best is not None else None,
        }, shared_path)


def restore_resume_state(train_state: TrainState, shared: Dict[str, Any], own: Dict[str, Any], device) -> None:
    """Put a state read by :func:`load_train_state` back into ``train_state`` and the RNGs."""
    load_state_dict_flexible(train_state.model, shared["model"], source="resume state")
    for opt, sd in zip(train_state.optimizers, shared["optimizers"]):
        opt.load_state_dict(sd)
    if train_state.ema is not None and shared["ema"] is not None:
        train_state.ema.load_state_dict({k: v.to(device) for k, v in shared["ema"].items()})
    if train_state.best is not None and shared.get("best") is not None:
        train_state.best.load_state_dict(shared["best"])
    for key in ("step", "total_steps", "iters_done", "batches_in_iter"):
        setattr(train_state, key, shared[key])
    train_state.carry = carries_from_saved(train_state.model, own["carry"], device)
    restore_rng_states(own, device)


def save_code_and_config(config: PretrainConfig) -> None:
    """The model's source files and ``all_config.yaml`` next to the checkpoints, as the original
    does, and the datasets' metadata (``dataset/``, utils/dataset_metadata.py) so that a copied
    checkpoint folder answers puzzles anywhere."""
    if config.checkpoint_path is None:
        return
    os.makedirs(config.checkpoint_path, exist_ok=True)
    sources = [get_model_source_path(config.arch.name), get_model_source_path(config.arch.loss.name)]
    models_dir = os.path.dirname(get_model_source_path(config.arch.loss.name))
    sources += [os.path.join(models_dir, "act.py"), os.path.join(models_dir, "layers.py")]  # what the model file builds on
    # A variant file builds on another model's file (trm_singlez on trm, recursive_reasoning.hrm on hrm_act_v1).
    model_cls = load_model_class(config.arch.name)
    for cls in (*model_cls.__mro__, *getattr(model_cls, "inner_class", object).__mro__):
        if cls.__module__.startswith("models."):
            sources.append(inspect.getsourcefile(cls))
    for path in dict.fromkeys(sources):
        atomic_write(os.path.join(config.checkpoint_path, os.path.basename(path)), lambda tmp, src=path: shutil.copyfile(src, tmp),
                     size_hint=os.path.getsize(path))
    atomic_write_text(os.path.join(config.checkpoint_path, "all_config.yaml"), yaml.dump(config.model_dump()))
    for rel, src in metadata_files(config.data_paths).items():
        atomic_write(os.path.join(config.checkpoint_path, *rel.split("/")), lambda tmp, src=src: shutil.copyfile(src, tmp),
                     size_hint=os.path.getsize(src))
