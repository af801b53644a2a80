"""The resume state's files in a checkpoint folder.

Besides the original's ``step_N`` (model weights), a run saves its full training state for exact
resume: ``step_N.train_state.pt`` (rank 0: weights, optimizers, EMA, step, schedule and data
position, config) and ``step_N.train_state.rank<R>.pt`` (each rank: its ACT carry and RNG states).
This module names, finds, reads and removes those files and stores the ACT carry in them; what a
train state writes into them and takes back is ``training/checkpointing.py``'s.

Every file is read with the safe loader (``utils/safe_io.py``); a truncated state names the
previous complete one. :func:`clean_checkpoint_folder` removes what killed runs
leave behind.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import torch

from inference.checkpoint import step_of
from utils.safe_io import CheckpointError, safe_load

TRAIN_STATE_FORMAT = "hrm-train-state-v1"
_STATE_RE = re.compile(r"^step_(\d+)\.train_state\.pt$")
_RANK_STATE_RE = re.compile(r"^step_(\d+)\.train_state\.rank\d+\.pt$")
# Temporary names of atomic_write (``.<name>.<8 random chars>.tmp``); mkstemp used the same shape.
_TMP_RE = re.compile(r"^\.(step_\d+.*|all_config\.yaml|eval_metrics\.jsonl|[\w.]+\.py)\.[a-z0-9_]{8}\.tmp$")


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
    step = step_of(resume)
    folder = os.path.dirname(resume)
    if step is not None and os.path.isfile(train_state_paths(folder, step, 0)[0]):
        return folder, step
    raise ValueError(f"resume={resume}: expected a checkpoint folder or <folder>/step_N with a matching step_N.train_state.pt")


def _load_state_file(folder: str, step: int, path: str, map_location, mmap: bool = False) -> Dict[str, Any]:
    """One train-state file; a truncated one names the previous complete state to resume from."""
    try:
        state = safe_load(path, "resume", map_location=map_location, mmap=mmap)
    except CheckpointError as e:
        if "truncated" not in str(e):
            raise
        earlier = [s for s in complete_train_states(folder) if s < step]
        hint = (f"the previous complete one is step_{earlier[-1]}: resume={os.path.join(folder, f'step_{earlier[-1]}')}"
                if earlier else "there is no earlier complete one in this folder")
        raise CheckpointError(f"{path}: this train state is truncated; {hint}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"resume={path}: not a train state (got {type(state).__name__})")
    return state


def read_train_state(folder: str, step: int, map_location="cpu") -> Dict[str, Any]:
    """Rank 0's shared train-state file of ``step`` (memory-mapped: cheap to peek at a few fields)."""
    path = train_state_paths(folder, step, 0)[0]
    shared = _load_state_file(folder, step, path, map_location, mmap=True)
    if shared.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"resume: {path} is not a train state of format {TRAIN_STATE_FORMAT}")
    return shared


def load_train_state(folder: str, step: int, rank: int, map_location) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(shared, own)``: the shared part loaded to ``map_location``, this rank's own part (RNG
    states, ACT carry) always to the CPU: the RNG setters take CPU byte tensors, and the carry is
    moved to the device when it is restored."""
    shared_path, rank_path = train_state_paths(folder, step, rank)
    if not os.path.isfile(rank_path):
        raise CheckpointError(f"resume: {rank_path} is missing (resuming with more processes than the run had?)")
    shared = _load_state_file(folder, step, shared_path, map_location)
    if shared.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"resume: {shared_path} is not a train state of format {TRAIN_STATE_FORMAT}")
    return shared, _load_state_file(folder, step, rank_path, "cpu")


def complete_train_states(folder: str) -> List[int]:
    """Steps whose shared file is a whole zip archive and whose rank files all exist, ascending."""
    steps = []
    for step in list_train_states(folder):
        shared = train_state_paths(folder, step, 0)[0]
        if not zipfile.is_zipfile(shared):
            continue
        try:
            world_size = torch.load(shared, map_location="cpu", weights_only=True, mmap=True).get("world_size", 1)
        except Exception:  # noqa: BLE001 - any unreadable file simply is not a complete state
            continue
        if all(os.path.isfile(train_state_paths(folder, step, r)[1]) for r in range(world_size)):
            steps.append(step)
    return steps


def clean_checkpoint_folder(folder: str) -> List[str]:
    """Remove what killed runs leave behind in ``folder``: temporary files of :func:`atomic_write`
    and train states (shared or per-rank files) from mid-pass saves older than the newest complete
    state. States saved at the end of a pass (evaluations) stay, as an uninterrupted run keeps them.
    Only this project's own file names are touched. Returns the removed names."""
    if not os.path.isdir(folder):
        return []
    removed = []
    names = os.listdir(folder)
    for name in names:
        if _TMP_RE.match(name):
            os.remove(os.path.join(folder, name))
            removed.append(name)
    complete = complete_train_states(folder)
    if complete:
        newest = complete[-1]
        for name in names:
            m = _STATE_RE.match(name) or _RANK_STATE_RE.match(name)
            if not m or int(m.group(1)) >= newest:
                continue
            step = int(m.group(1))
            if step in complete and _is_pass_end_state(folder, step):
                continue
            os.remove(os.path.join(folder, name))
            removed.append(name)
    return sorted(removed)


def _is_pass_end_state(folder: str, step: int) -> bool:
    try:
        return read_train_state(folder, step).get("batches_in_iter", 0) == 0
    except CheckpointError:
        return False


def remove_train_state(checkpoint_path: str, step: int, world_size: int) -> None:
    shared, _ = train_state_paths(checkpoint_path, step, 0)
    for path in [shared] + [train_state_paths(checkpoint_path, step, r)[1] for r in range(world_size)]:
        if os.path.exists(path):
            os.remove(path)


def carry_to_dict(carry) -> Optional[Dict[str, Any]]:
    """The ACT carry as a flat dict: the inner carry's latents (``z_H``, ``z_L``, ...) at the top
    level next to the outer fields, as format v1 stores them. Any number of latents."""
    if carry is None:
        return None
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(carry):
        value = getattr(carry, f.name)
        if dataclasses.is_dataclass(value):
            out.update({g.name: getattr(value, g.name) for g in dataclasses.fields(value)})
        else:
            out[f.name] = dict(value) if isinstance(value, dict) else value
    return out


def carry_from_dict(model: torch.nn.Module, d: Optional[Dict[str, Any]], device):
    """Rebuild a carry saved by :func:`carry_to_dict` (on ``device``)."""
    if d is None:
        return None
    d = {k: (v.to(device) if torch.is_tensor(v) else {kk: vv.to(device) for kk, vv in v.items()}) for k, v in d.items()}
    carry = model.initial_carry(d["current_data"])  # type: ignore[operator]
    for f in dataclasses.fields(carry):
        value = getattr(carry, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                setattr(value, g.name, d[g.name])
        else:
            setattr(carry, f.name, d[f.name])
    return carry


def carries_to_saved(carries: Optional[List[Any]]) -> Any:
    """One carry dict per micro-batch (gradient accumulation); a single dict, as format v1, when there is one."""
    if carries is None:
        return None
    saved = [carry_to_dict(c) for c in carries]
    return saved[0] if len(saved) == 1 else saved


def carries_from_saved(model: torch.nn.Module, saved: Any, device) -> Optional[List[Any]]:
    """The list of carries saved by :func:`carries_to_saved`."""
    if saved is None:
        return None
    return [carry_from_dict(model, d, device) for d in (saved if isinstance(saved, list) else [saved])]


def restore_rng_states(own: Dict[str, Any], device) -> None:
    """The torch (and, on a GPU, CUDA) RNG states of a rank's resume state, whatever device a
    loader moved them to (``torch.set_rng_state`` takes CPU byte tensors only)."""
    torch.set_rng_state(own["rng_torch"].to("cpu"))
    if own.get("rng_cuda") is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(own["rng_cuda"].to("cpu"))
