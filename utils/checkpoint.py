"""Crash-safe checkpoint files.

Every file is written under a temporary name in the same folder and renamed into place, so a
crash while saving never leaves a truncated checkpoint: readers see the old file or the new one.

Besides the original's ``step_N`` (model weights), a run saves its full training state for exact
resume: ``step_N.train_state.pt`` (rank 0: weights, optimizers, EMA, step, schedule and data
position, config) and ``step_N.train_state.rank<R>.pt`` (each rank: its ACT carry and RNG states).

Reading never runs code: every file is loaded with ``weights_only=True`` (states hold only
tensors, numbers, strings, lists and dicts), and a file that is not a checkpoint, a truncated
one, or a full disk while writing is one :class:`CheckpointError` line. Files get the user's
umask. :func:`clean_checkpoint_folder` removes what killed runs leave behind.
"""
from __future__ import annotations

import dataclasses
import errno
import glob
import inspect
import json
import os
import re
import secrets
import shutil
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
import yaml

from utils.dataset_metadata import metadata_files
from utils.errors import UserError
from utils.functions import get_model_source_path, load_model_class, load_state_dict_flexible, strip_compile_prefix, unwrap_compiled

TRAIN_STATE_FORMAT = "hrm-train-state-v1"
STEP_RE = re.compile(r"^step_(\d+)$")  # the original's weights file name
_STATE_RE = re.compile(r"^step_(\d+)\.train_state\.pt$")
_RANK_STATE_RE = re.compile(r"^step_(\d+)\.train_state\.rank\d+\.pt$")
# Temporary names of atomic_write (``.<name>.<8 random chars>.tmp``); mkstemp used the same shape.
_TMP_RE = re.compile(r"^\.(step_\d+.*|all_config\.yaml|eval_metrics\.jsonl|[\w.]+\.py)\.[a-z0-9_]{8}\.tmp$")


class CheckpointError(UserError):
    """A checkpoint file that cannot be written or read; the message is one line for the user."""


def step_of(path: str) -> Optional[int]:
    """N for a ``.../step_N`` weights file, else None."""
    m = STEP_RE.match(os.path.basename(path))
    return int(m.group(1)) if m else None


def is_disk_full(e: BaseException, folder: str, needed: int) -> bool:
    """Whether the failed write ``e`` into ``folder`` ran out of space (``needed`` bytes: about what it wrote)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch.save reports a failed write as a RuntimeError from its C++ writer (no errno).
    try:
        return isinstance(e, (OSError, RuntimeError)) and shutil.disk_usage(folder).free < max(needed, 1 << 20)
    except OSError:
        return False


def atomic_write(path: str, write_fn, size_hint: int = 0) -> None:
    """Call ``write_fn(tmp_path)``, then rename ``tmp_path`` to ``path``.

    The temporary file is created with the user's umask (mkstemp would make it 0600, unreadable
    to collaborators). A full disk becomes one :class:`CheckpointError` line; the old ``path``,
    if any, is untouched and the temporary is removed.

    Only a regular file or a new path is replaced by a rename: a symbolic link is written through
    (the link stays), a device or pipe (``/dev/null``) is written in place, and a folder raises
    ``IsADirectoryError``.
    """
    if os.path.islink(path):
        path = os.path.realpath(path)
    if os.path.exists(path) and not os.path.isfile(path):
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "is a folder", path)
        write_fn(path)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    while True:
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if is_disk_full(e, folder, size_hint):
            # The traceback holds the failed writer's open file: drop it so the space is freed now.
            e.__traceback__ = None
            del e
            raise CheckpointError(f"no space left on device (needed about {max(size_hint, 1 << 20) / 1e6:.0f} MB in {folder})") from None
        raise


def _nbytes(obj: Any) -> int:
    """Bytes of the tensors in a nested object (the size of its ``torch.save`` file, roughly)."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def atomic_torch_save(obj: Any, path: str) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:  # our own handle: closed (space freed) even when the write fails
            torch.save(obj, f)
    atomic_write(path, write, size_hint=_nbytes(obj) + (64 << 10))


def safe_load(path: str, what: str, map_location="cpu", mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` (a pickle can only rebuild tensors and plain
    containers, never run code); any failure is one :class:`CheckpointError` naming ``what=path``."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{what}={path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - whatever a damaged or foreign file makes the unpickler raise
        text = str(e)
        if "Unsupported global" in text:
            raise CheckpointError(f"{what}={path}: refused to load: the file holds Python objects other than tensors and plain "
                                  "containers (not a checkpoint written by this project, or tampered with)") from None
        detail = re.sub(r"\s+", " ", text.split("WeightsUnpickler error:")[-1]).strip()[:120] or type(e).__name__
        if isinstance(e, EOFError) or "central directory" in text or _looks_truncated(path):
            raise CheckpointError(f"{what}={path}: the file is truncated ({detail})") from None
        raise CheckpointError(f"{what}={path}: not a checkpoint ({detail})") from None


def _looks_truncated(path: str) -> bool:
    """A zip file (torch.save's format) whose end record is missing: cut off while copying or writing."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        return head == b"PK\x03\x04" and not zipfile.is_zipfile(path)
    except OSError:
        return False


def _safetensors_header_length(path: str) -> Optional[int]:
    """The header length a safetensors file starts with (8 bytes, then the JSON header), or None for other files."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return None
    n = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    return n if head[8:9] == b"{" and 0 < n < (100 << 20) else None


def is_safetensors(path: str) -> bool:
    """Whether ``path`` is a safetensors file, whatever its name."""
    return _safetensors_header_length(path) is not None


def _load_safetensors(path: str, what: str, map_location) -> Dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"{what}={path}: a safetensors file; reading it needs the safetensors package (pip install safetensors)") from None
    try:
        return load_file(path, device=str(torch.device(map_location)))
    except Exception as e:  # noqa: BLE001 - whatever a damaged file makes the reader raise
        detail = re.sub(r"\s+", " ", str(e)).strip()[:120] or type(e).__name__
        truncated = (_safetensors_header_length(path) or 0) + 8 > os.path.getsize(path)
        problem = "the safetensors file is truncated" if truncated else "not a readable safetensors file"
        raise CheckpointError(f"{what}={path}: {problem} ({detail})") from None


def load_weights(path: str, what: str, map_location="cpu") -> Dict[str, torch.Tensor]:
    """A weights file (``step_N``, a release's ``checkpoint``, or ``model.safetensors``): a dict of
    tensors, or one :class:`CheckpointError` line."""
    if os.path.isfile(path) and is_safetensors(path):
        state_dict = _load_safetensors(path, what, map_location)
    else:
        state_dict = safe_load(path, what, map_location=map_location)
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state_dict.items()):
        raise CheckpointError(f"{what}={path}: not a model checkpoint (expected a dict of named tensors, got {type(state_dict).__name__})")
    # NaN or infinite weights answer garbage without any error further on.
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{what}={path}: {len(bad)} weight tensor(s) hold NaN or infinite values ({', '.join(sorted(bad)[:3])}"
                              f"{', ...' if len(bad) > 3 else ''}); the run diverged or the file is damaged")
    return state_dict


def atomic_write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, write, size_hint=len(text.encode()))


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


# ---------------------------------------------------------------------------------------------
# What goes into a resume state


def model_weights(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Weights as saved in ``step_N``: original key names, no ``_orig_mod.`` prefix."""
    return strip_compile_prefix(unwrap_compiled(model).state_dict())


# Keys that may differ between a run and its resumption.
RESUME_MAY_CHANGE = {"resume", "checkpoint_interval_steps", "log_interval", "eval_save_outputs", "load_checkpoint",
                     "checkpoint_path", "project_name", "run_name", "wandb_group", "compile", "dist_timeout_s",
                     "early_stop_patience", "eval_full_at_end", "eval_global_batch_size", "max_train_seconds"}


def check_resume_config(now: Dict[str, Any], saved: Dict[str, Any], defaults: Optional[Dict[str, Any]] = None) -> None:
    """Refuse to resume with settings that change the run (``now``/``saved``: config dicts).

    ``defaults``: values of keys added to the config after the saved run started (absent from ``saved``).
    """
    saved = {**{k: v for k, v in (defaults or {}).items() if k not in saved}, **saved}
    changed = sorted(k for k in set(now) | set(saved) if k not in RESUME_MAY_CHANGE and now.get(k) != saved.get(k))
    if changed:
        details = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
        raise ValueError(f"resume: config differs from the run being resumed ({details}); resume with the original settings")


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


def save_resume_state(checkpoint_path: str, train_state, config: Dict[str, Any], info) -> None:
    """Everything needed to continue exactly: rank 0 writes the shared part, each rank its own.

    ``train_state`` is pretrain's ``TrainState``; ``config`` the run's config as a dict;
    ``info`` the :class:`utils.distributed.DistInfo` of this process.
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


def restore_resume_state(train_state, shared: Dict[str, Any], own: Dict[str, Any], device) -> None:
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


def restore_rng_states(own: Dict[str, Any], device) -> None:
    """The torch (and, on a GPU, CUDA) RNG states of a rank's resume state, whatever device a
    loader moved them to (``torch.set_rng_state`` takes CPU byte tensors only)."""
    torch.set_rng_state(own["rng_torch"].to("cpu"))
    if own.get("rng_cuda") is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(own["rng_cuda"].to("cpu"))


def save_code_and_config(config) -> None:
    """The model's source files and ``all_config.yaml`` (``config`` is pretrain's ``PretrainConfig``)
    next to the checkpoints, as the original does, and the datasets' metadata (``dataset/``,
    utils/dataset_metadata.py) so that a copied checkpoint folder answers puzzles anywhere."""
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


def write_metrics_line(checkpoint_path: Optional[str], step: int, metrics: Dict[str, Any]) -> None:
    """Append evaluation metrics to ``<checkpoint_path>/eval_metrics.jsonl`` (readable without W&B)."""
    if checkpoint_path is None:
        return
    os.makedirs(checkpoint_path, exist_ok=True)
    with open(os.path.join(checkpoint_path, "eval_metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")
