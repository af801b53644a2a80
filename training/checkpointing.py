"""Saving and resuming during training: the original's ``step_N`` weights, the full resume state
(``utils/checkpoint.py`` holds its file format), and reading it back on every rank."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from training.config import PretrainConfig
from training.state import Run, TrainState
from utils import checkpoint as ckpt
from utils.config import ConfigError
from utils.distributed import DistInfo, broadcast_object


def save_train_state(config: PretrainConfig, train_state: TrainState) -> None:
    """The original's checkpoint: model weights as ``step_N`` (EMA weights when ``ema``)."""
    if config.checkpoint_path is None:
        return
    ckpt.atomic_torch_save(ckpt.model_weights(train_state.model), os.path.join(config.checkpoint_path, f"step_{train_state.step}"))


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


def save_resume(run: Run, interval: bool) -> None:
    """Write the resume state of this step and drop the previous interval-only one."""
    config, step = run.config, run.state.step
    if config.checkpoint_path is not None:
        ckpt.save_resume_state(config.checkpoint_path, run.state, config.model_dump(), run.info)
        if run.info.rank == 0 and run.interval_state_step is not None and run.interval_state_step != step:
            ckpt.remove_train_state(config.checkpoint_path, run.interval_state_step, run.info.world_size)
    run.interval_state_step = step if interval else None
    run.last_saved = step
