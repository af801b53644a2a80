"""Dataset format shared by every builder and by the loader.

A dataset directory holds ``train/`` and ``test/``; each has ``dataset.json``
(:class:`PuzzleDatasetMetadata`) and, per set name ``S`` listed in it, the arrays
``S__inputs.npy``, ``S__labels.npy``, ``S__puzzle_identifiers.npy``,
``S__puzzle_indices.npy`` and ``S__group_indices.npy``. The top level holds
``identifiers.json`` (identifier id -> name, ``"<blank>"`` for 0).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Dict, Iterator, List, Optional

import numpy as np
import pydantic

DATASET_FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")

# Ids of the 8 symmetries of the square, as the original builders number them.
DIHEDRAL_INVERSE = [0, 3, 2, 1, 4, 5, 6, 7]


class DatasetError(ValueError):
    """A dataset on disk (or a builder's input) is not what it must be; the message says where."""


class PuzzleDatasetMetadata(pydantic.BaseModel):
    """Contents of ``<split>/dataset.json``."""

    pad_id: int
    ignore_label_id: Optional[int]
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: Optional[int] = None
    sets: List[str]


def dihedral_transform(arr: np.ndarray, tid: int) -> np.ndarray:
    """Apply symmetry ``tid`` of the square to the last two axes of ``arr``.

    0 identity, 1 rot90, 2 rot180, 3 rot270, 4 flip left-right, 5 flip up-down,
    6 transpose, 7 anti-diagonal reflection (flip left-right of rot90).
    """
    axes = (-2, -1)
    if tid == 0:
        return arr
    if tid == 1:
        return np.rot90(arr, k=1, axes=axes)
    if tid == 2:
        return np.rot90(arr, k=2, axes=axes)
    if tid == 3:
        return np.rot90(arr, k=3, axes=axes)
    if tid == 4:
        return np.flip(arr, axis=-1)
    if tid == 5:
        return np.flip(arr, axis=-2)
    if tid == 6:
        return np.swapaxes(arr, -2, -1)
    if tid == 7:
        return np.flip(np.rot90(arr, k=1, axes=axes), axis=-1)
    raise ValueError(f"dihedral transform id must be 0..7, got {tid}")


def inverse_dihedral_transform(arr: np.ndarray, tid: int) -> np.ndarray:
    """Undo :func:`dihedral_transform` with the same ``tid``."""
    return dihedral_transform(arr, DIHEDRAL_INVERSE[tid])


def load_metadata(split_dir: str) -> PuzzleDatasetMetadata:
    """Read ``<split_dir>/dataset.json`` with a clear error when it is missing or malformed."""
    path = os.path.join(split_dir, "dataset.json")
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: missing; a dataset split folder must hold dataset.json (build the dataset first)")
    try:
        with open(path, "r") as f:
            return PuzzleDatasetMetadata(**json.load(f))
    except (json.JSONDecodeError, TypeError, pydantic.ValidationError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatasetError(f"{path}: not a valid dataset.json ({first})") from None


def save_set(split_dir: str, set_name: str, arrays: Dict[str, np.ndarray]) -> None:
    """Write the five arrays of one set into ``split_dir``."""
    missing = [k for k in DATASET_FIELDS if k not in arrays]
    if missing:
        raise ValueError(f"save_set: missing arrays {missing}")
    os.makedirs(split_dir, exist_ok=True)
    for field in DATASET_FIELDS:
        np.save(os.path.join(split_dir, f"{set_name}__{field}.npy"), arrays[field])


def save_metadata(split_dir: str, metadata: PuzzleDatasetMetadata) -> None:
    os.makedirs(split_dir, exist_ok=True)
    with open(os.path.join(split_dir, "dataset.json"), "w") as f:
        json.dump(metadata.model_dump(), f)


def save_identifiers(output_dir: str, names: List[str]) -> None:
    """``names[i]`` is the name of identifier ``i``; index 0 is ``"<blank>"``."""
    with open(os.path.join(output_dir, "identifiers.json"), "w") as f:
        json.dump(names, f)


@contextlib.contextmanager
def atomic_output_dir(output_dir: str) -> Iterator[str]:
    """Yield a temporary sibling folder; on success it replaces ``output_dir`` in one rename.

    A builder that fails (or is interrupted) leaves ``output_dir`` as it was, never half-written.
    """
    output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise DatasetError(f"--output-dir {output_dir}: exists and is not a folder")
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
    try:
        yield tmp
        old = None
        if os.path.exists(output_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.old-", dir=parent)
            os.rmdir(old)
            os.rename(output_dir, old)
        os.rename(tmp, output_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
