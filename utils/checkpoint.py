"""Crash-safe checkpoint files.

Every file is written under a temporary name in the same folder and renamed into place, so a
crash while saving never leaves a truncated checkpoint: readers see the old file or the new one.

Besides the original's ``step_N`` (model weights), a run saves its full training state for exact
resume: ``step_N.train_state.pt`` (rank 0: weights, optimizers, EMA, step, schedule and data
position, config) and ``step_N.train_state.rank<R>.pt`` (each rank: its ACT carry and RNG states).
"""
from __future__ import annotations

import glob
import os
import re
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import torch

TRAIN_STATE_FORMAT = "hrm-train-state-v1"
_STATE_RE = re.compile(r"^step_(\d+)\.train_state\.pt$")


def atomic_write(path: str, write_fn) -> None:
    """Call ``write_fn(tmp_path)``, then rename ``tmp_path`` to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, write)


def train_state_paths(checkpoint_path: str, step: int, rank: int) -> Tuple[str, str]:
    base = os.path.join(checkpoint_path, f"step_{step}.train_state")
    return base + ".pt", f"{base}.rank{rank}.pt"


def list_train_states(checkpoint_path: str) -> List[int]:
    """Steps with a complete rank-0 train state in ``checkpoint_path``, ascending."""
    steps = []
    for path in glob.glob(os.path.join(checkpoint_path, "step_*.train_state.pt")):
        m = _STATE_RE.match(os.path.basename(path))
        if m:
            steps.append(int(m.group(1)))
    return sorted(steps)


def resolve_resume(resume: str) -> Tuple[str, int]:
    """``resume`` is a checkpoint folder (take its latest state) or ``<folder>/step_N``.

    Returns ``(folder, step)``; raises ``ValueError`` naming what is missing.
    """
    if os.path.isdir(resume):
        steps = list_train_states(resume)
        if not steps:
            raise ValueError(f"resume={resume}: no step_N.train_state.pt in this folder (was it written by a run with this version?)")
        return resume, steps[-1]
    m = re.match(r"^step_(\d+)$", os.path.basename(resume))
    folder = os.path.dirname(resume)
    if m and os.path.isfile(train_state_paths(folder, int(m.group(1)), 0)[0]):
        return folder, int(m.group(1))
    raise ValueError(f"resume={resume}: expected a checkpoint folder or <folder>/step_N with a matching step_N.train_state.pt")


def load_train_state(folder: str, step: int, rank: int, map_location) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    shared_path, rank_path = train_state_paths(folder, step, rank)
    if not os.path.isfile(rank_path):
        raise ValueError(f"resume: {rank_path} is missing (resuming with more processes than the run had?)")
    shared = torch.load(shared_path, map_location=map_location, weights_only=False)
    if shared.get("format") != TRAIN_STATE_FORMAT:
        raise ValueError(f"resume: {shared_path} is not a train state of format {TRAIN_STATE_FORMAT}")
    return shared, torch.load(rank_path, map_location=map_location, weights_only=False)


def remove_train_state(checkpoint_path: str, step: int, world_size: int) -> None:
    shared, _ = train_state_paths(checkpoint_path, step, 0)
    for path in [shared] + [train_state_paths(checkpoint_path, step, r)[1] for r in range(world_size)]:
        if os.path.exists(path):
            os.remove(path)


def latest_weights(folder: str) -> Optional[str]:
    """The ``step_N`` weights file with the largest N in ``folder``, if any."""
    best = None
    for path in glob.glob(os.path.join(folder, "step_*")):
        m = re.match(r"^step_(\d+)$", os.path.basename(path))
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), path)
    return best[1] if best else None
