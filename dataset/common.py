"""Dataset format shared by every builder and by the loader, and the skeleton every builder follows.

A dataset directory holds ``train/`` and ``test/``; each has ``dataset.json``
(:class:`PuzzleDatasetMetadata`) and, per set name ``S`` listed in it, the arrays
``S__inputs.npy``, ``S__labels.npy``, ``S__puzzle_identifiers.npy``,
``S__puzzle_indices.npy`` and ``S__group_indices.npy``. The top level holds
``identifiers.json`` (identifier id -> name, ``"<blank>"`` for 0).

A builder ``dataset/build_<task>_dataset.py`` is written in this shape (Sudoku, maze, ARC and
domino all are; copy it for a new task)::

    class TaskBuildConfig(pydantic.BaseModel):
        # One field per command-line option, validated here only (Field constraints):
        # --num-aug -1 is refused with one line and exit status 2, before any work.
        puzzles: str = pydantic.Field(..., description="input file of puzzles")
        output_dir: str = pydantic.Field("data/task", description="dataset folder to write")
        num_aug: int = pydantic.Field(0, ge=0, description="extra copies per train puzzle")

    def build_task_dataset(config: TaskBuildConfig) -> None:
        # Before any work: the output must be new, empty or a dataset, and hold no input.
        check_output_dir(config.output_dir, [("--puzzles", config.puzzles)])
        ...  # read or generate puzzles; raise DatasetError("<file>: line 3: ...") on bad input
        with atomic_output_dir(config.output_dir, needed_bytes=...) as tmp:
            save_split(os.path.join(tmp, "train"), inputs, labels, group_size=1 + config.num_aug,
                       vocab_size=..., task="task")
            save_split(os.path.join(tmp, "test"), ...)
            save_identifiers(tmp, ["<blank>"])

    def main(argv=None) -> None:
        build_task_dataset(parse_config(TaskBuildConfig, argv, description=__doc__))

    if __name__ == "__main__":
        run_cli(main)

:func:`parse_config` makes the command line from the config's fields (``--num-aug`` and
``--num_aug`` both, defaults and help from the fields); :func:`run_cli` turns a
:class:`DatasetError` (or a full disk) into one ``error: ...`` line; :func:`check_output_dir`
refuses an output folder that holds anything but a dataset, or that holds an input;
:func:`atomic_output_dir` writes into a temporary sibling folder that replaces the output only
when complete (and removes what killed builds left behind); :func:`save_split` writes the common case of one
example per puzzle, every puzzle with the blank identifier, groups of copies of one puzzle.
Builders with several examples per puzzle or named identifiers (ARC) write their arrays with
:func:`save_set` or :class:`NpyFile` and :func:`save_metadata`.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import fcntl
import io
import json
import math
import mmap
import os
import re
import shutil
import socket
import sys
import tempfile
import typing
import urllib.parse
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type, TypeVar, Union

import numpy as np
import pydantic

from utils.cli import ArgumentParser
from utils.errors import UserError

DATASET_FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")

# Ids of the 8 symmetries of the square, as the original builders number them.
DIHEDRAL_INVERSE = [0, 3, 2, 1, 4, 5, 6, 7]


class DatasetError(UserError):
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
    # Which task the builder made (sudoku, maze, arc, domino, ...); absent in datasets of the original code.
    task: Optional[str] = None
    # ARC on a canvas other than 30x30: its height and width (the sequence is the canvas row by row).
    canvas_height: Optional[int] = None
    canvas_width: Optional[int] = None
    # ARC evaluation protocol (hrm: every task's test inputs evaluated; unseen: held-out tasks only)
    # and the held-out tasks, whose demonstrations are in no training split.
    protocol: Optional[str] = None
    held_out_tasks: Optional[List[str]] = None


# Keys written only when set, so that datasets without them stay byte-equal to the original's.
_OPTIONAL_METADATA = ("task", "canvas_height", "canvas_width", "protocol", "held_out_tasks")


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
    """Write ``<split_dir>/dataset.json`` (without ``task`` and the other optional keys when unset, as the original)."""
    os.makedirs(split_dir, exist_ok=True)
    unset = {k for k in _OPTIONAL_METADATA if getattr(metadata, k) is None}
    with open(os.path.join(split_dir, "dataset.json"), "w") as f:
        json.dump(metadata.model_dump(exclude=unset or None), f)


def save_split(split_dir: str, inputs: np.ndarray, labels: np.ndarray, *, vocab_size: int, task: str,
               group_size: Optional[int] = None, group_indices: Optional[np.ndarray] = None) -> None:
    """Write one split of the common layout: every example its own puzzle, all with the blank identifier.

    ``inputs`` and ``labels`` are ``[N, seq_len]`` tokens (PAD 0, label 0 ignored, as the Sudoku,
    maze and domino builders use them). Consecutive examples form groups (a puzzle and its
    augmented copies): give ``group_size`` when every group has that many, else
    ``group_indices`` (``[G + 1]``, from 0 to N).
    """
    total = inputs.shape[0]
    if (group_size is None) == (group_indices is None):
        raise ValueError("save_split: give exactly one of group_size and group_indices")
    if group_indices is None:
        group_indices = np.arange(0, total + 1, group_size, dtype=np.int32)
    save_set(split_dir, "all", {
        "inputs": inputs,
        "labels": labels,
        "puzzle_identifiers": np.zeros(total, dtype=np.int32),
        "puzzle_indices": np.arange(total + 1, dtype=np.int32),
        "group_indices": np.asarray(group_indices, dtype=np.int32),
    })
    save_metadata(split_dir, PuzzleDatasetMetadata(
        seq_len=inputs.shape[1], vocab_size=vocab_size, pad_id=0, ignore_label_id=0, blank_identifier_id=0,
        num_puzzle_identifiers=1, total_groups=len(group_indices) - 1, mean_puzzle_examples=1, total_puzzles=total,
        sets=["all"], task=task))


class NpyFile:
    """A new ``.npy`` file of known shape, written a range of rows at a time (``with NpyFile(...) as f``).

    numpy's ``open_memmap(mode="w+")`` writes the header and sizes the file. Its disk space is
    then reserved at once, so a full disk is an ``OSError`` (ENOSPC) before anything is written.
    Rows go in with ``pwrite`` at their offset rather than through the memory map: filling a
    map costs a page fault per page (ARC with 1000 augmentations: 51 s of CPU instead of 42 s)
    and counts every written page in the process's resident memory (5.4 GB instead of 0.6 GB).
    """

    def __init__(self, path: str, shape: Sequence[int], dtype: np.dtype):
        array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
        self.path, self.shape, self.dtype, self.offset = path, array.shape, array.dtype, array.offset
        del array
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(path, os.O_WRONLY)
        try:
            os.posix_fallocate(self._fd, 0, os.fstat(self._fd).st_size)
        except BaseException:
            os.close(self._fd)
            raise

    def write_rows(self, start: int, block: np.ndarray) -> None:
        """Write ``block`` as rows ``start .. start + len(block)``."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:] or not 0 <= start <= self.shape[0] - block.shape[0]:
            raise ValueError(f"{self.path}: rows {start}+{block.shape} do not fit array shape {self.shape}")
        data, position = memoryview(block).cast("B"), self.offset + start * self._row_bytes
        while data:
            written = os.pwrite(self._fd, data, position)
            data, position = data[written:], position + written

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> "NpyFile":
        return self

    def __exit__(self, *_) -> None:
        self.close()


def save_identifiers(output_dir: str, names: List[str]) -> None:
    """``names[i]`` is the name of identifier ``i``; index 0 is ``"<blank>"``."""
    with open(os.path.join(output_dir, "identifiers.json"), "w") as f:
        f.write(json.dumps(names))  # dumps uses the C encoder; dump(obj, f) does not (slow for 1M names)


# Temporary build folders made by atomic_output_dir: ".<output name>.tmp-" + mkdtemp's 8 characters.
_BUILD_TMP_PATTERN = re.compile(r"^\..+\.tmp-[a-z0-9_]{8}$")

# Free space below which a failed write is taken for a full disk (numpy's writes on a full disk
# raise an OSError without errno: "N requested and M written").
_NEARLY_FULL_BYTES = 1 << 16


def remove_stale_build_folders(parent: str) -> List[str]:
    """Remove temporary build folders in ``parent`` that no running build holds; return their paths.

    A build holds a lock on its folder for as long as it runs (see :func:`atomic_output_dir`), and
    the lock dies with the process, so a folder nobody holds was left by a killed build. Only
    names of the builders' own pattern are considered.
    """
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(parent, name)
        if not _BUILD_TMP_PATTERN.match(name) or os.path.islink(path) or not os.path.isdir(path):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a running build's folder
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


# A dataset folder: the split folders, each holding dataset.json and its sets' arrays, and the
# files builders write beside them (identifiers; ARC's test tasks; the domino policy). Only such
# a folder is ever replaced; anything else in it is the user's.
DATASET_SPLITS = ("train", "test")
BUILDER_FILES = ("identifiers.json", "test_puzzles.json", "domino.json")
_SPLIT_FILE = re.compile(r"^(dataset\.json|.+__(" + "|".join(DATASET_FIELDS) + r")\.npy)$")
_NAMES_SHOWN = 5


def _entry_name(entry: os.DirEntry, prefix: str = "") -> str:
    return prefix + entry.name + ("/" if entry.is_dir(follow_symlinks=False) else "")


def foreign_entries(folder: str) -> List[str]:
    """What in ``folder`` no builder wrote (``notes/`` for a folder): empty for a dataset or an empty folder.

    A dataset is at least one split folder (``train/``, ``test/``) holding ``dataset.json``,
    split folders holding only ``dataset.json`` and ``<set>__<array>.npy``, and at the top only
    :data:`BUILDER_FILES` besides them. Symbolic links are never a builder's.
    """
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    foreign, splits = [], 0
    for entry in entries:
        if entry.name in DATASET_SPLITS and entry.is_dir(follow_symlinks=False):
            with os.scandir(entry.path) as it:
                inside = sorted(it, key=lambda e: e.name)
            if not any(e.name == "dataset.json" and e.is_file(follow_symlinks=False) for e in inside):
                foreign.append(_entry_name(entry))
                continue
            splits += 1
            foreign += [_entry_name(e, entry.name + "/") for e in inside
                        if not (e.is_file(follow_symlinks=False) and _SPLIT_FILE.match(e.name))]
        elif not (entry.name in BUILDER_FILES and entry.is_file(follow_symlinks=False)):
            foreign.append(_entry_name(entry))
    if entries and not splits:  # builder files without any split: not a dataset either
        foreign = [_entry_name(e) for e in entries]
    return foreign


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_dir(output_dir: str, inputs: Sequence[Tuple[str, Optional[str]]] = ()) -> None:
    """Refuse an ``--output-dir`` the build must not replace: :class:`OptionError` (exit status 2), one line.

    A build replaces its output folder as a whole, so the folder must be new, empty or a dataset
    (:func:`foreign_entries`), and no input of the build, given as ``(option, path)`` pairs
    (None skipped), may lie inside it. Builders call this before any work; :func:`atomic_output_dir`
    checks the folder again before replacing it.
    """
    for option, path in inputs:
        if path is not None and _inside(path, output_dir):
            raise OptionError(f"{option} {path} is inside --output-dir {output_dir}, which the build replaces "
                              "as a whole: choose another output folder")
    if os.path.lexists(output_dir) and not os.path.isdir(output_dir):
        raise OptionError(f"--output-dir {output_dir}: exists and is not a folder")
    if os.path.isdir(output_dir):
        foreign = foreign_entries(output_dir)
        if foreign:
            shown = ", ".join(foreign[:_NAMES_SHOWN])
            if len(foreign) > _NAMES_SHOWN:
                shown += f" and {len(foreign) - _NAMES_SHOWN} more"
            raise OptionError(f"--output-dir {output_dir} holds files that are not a dataset ({shown}): "
                              "choose an empty or new folder")


def _folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder) for f in files)


def _megabytes(num_bytes: int) -> int:
    return max(1, math.ceil(num_bytes / 1e6))


@contextlib.contextmanager
def atomic_output_dir(output_dir: str, needed_bytes: Optional[int] = None) -> Iterator[str]:
    """Yield a temporary sibling folder; on success it replaces ``output_dir`` in one rename.

    Only a new or empty folder or a dataset is replaced (:func:`check_output_dir`, checked on
    entry and again just before the rename); anything else is refused and left as it is.
    A builder that fails (or is interrupted) leaves ``output_dir`` as it was, never half-written.
    Temporary folders of killed builds in the same parent folder are removed first.
    ``needed_bytes`` (the builder's estimate of the dataset's size) is checked against the free
    space before anything is written; a full disk during the build is a :class:`DatasetError`
    "no space left on device (needed about N MB in <folder>)".
    """
    given, output_dir = output_dir, os.path.abspath(output_dir)
    check_output_dir(given)
    parent = os.path.dirname(output_dir)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"--output-dir {output_dir}: cannot create the folder {parent} ({e.strerror})") from None
    for path in remove_stale_build_folders(parent):
        print(f"removed {path} (left by an interrupted build)")
    if needed_bytes is not None and shutil.disk_usage(parent).free < needed_bytes:
        raise DatasetError(f"no space left on device (needed about {_megabytes(needed_bytes)} MB in {parent})")
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)
    lock = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until the build ends: the folder is in use
    except OSError:
        pass  # a file system without locks: nobody can take the folder for stale either
    # mkdtemp makes a private (0700) folder; give the dataset the permissions of a normal mkdir.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        check_output_dir(given)  # the user may have put files there while the build ran
        old = None
        if os.path.exists(output_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.old-", dir=parent)
            os.rmdir(old)
            os.rename(output_dir, old)
        os.rename(tmp, output_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        full = e.errno == errno.ENOSPC or shutil.disk_usage(parent).free < _NEARLY_FULL_BYTES
        written = _folder_bytes(tmp) if full else 0
        shutil.rmtree(tmp, ignore_errors=True)
        if not full:
            raise
        needed = max(needed_bytes or 0, written)
        raise DatasetError(f"no space left on device (needed about {_megabytes(needed)} MB in {parent})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock)


# ----------------------------------------------------------------------------------------------
# Command line of every builder

C = TypeVar("C", bound=pydantic.BaseModel)


class OptionError(DatasetError):
    """A command-line option has a value the builder's config refuses (exit status 2, as argparse)."""

    exit_status = 2


BuilderArgumentParser = ArgumentParser  # a bad flag: one ``error: ...`` line and exit status 2


def _option_kind(annotation: Any) -> Dict[str, Any]:
    """argparse keywords for a config field's type: int/float/str, Optional[...], List[...], Literal[...], bool."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Union:  # Optional[X]
        return _option_kind(next(a for a in args if a is not type(None)))
    if origin in (list, List):
        return dict(_option_kind(args[0]), nargs="+")
    if origin is typing.Literal:
        return {"type": type(args[0]), "metavar": "{" + ",".join(str(a) for a in args) + "}"}
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    return {"type": annotation}


def config_parser(config_cls: Type[pydantic.BaseModel], description: Optional[str] = None) -> BuilderArgumentParser:
    """A parser with one option per field of ``config_cls``: ``--num-aug`` and ``--num_aug`` for ``num_aug``.

    Defaults and help come from the fields (``Field(description=...)``, and a ``metavar`` in
    ``json_schema_extra``); values are only converted here, validation is the config's (in
    :func:`parse_config`). ``description``: the first paragraph is the parser's description.
    """
    parser = BuilderArgumentParser(description=(description or "").strip().split("\n\n")[0] or None)
    for name, field in config_cls.model_fields.items():
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
        default = field.get_default(call_default_factory=True)
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        help_text = field.description or ""
        if shown not in (None, "") and default is not False:
            help_text += f" (default {shown})"
        kind = _option_kind(field.annotation)
        if isinstance(field.json_schema_extra, dict) and "metavar" in field.json_schema_extra:
            kind["metavar"] = field.json_schema_extra["metavar"]
        parser.add_argument(*flags, dest=name, default=default, help=help_text or None, **kind)
    return parser


def describe_validation_error(error: pydantic.ValidationError) -> str:
    """The first problem of a config as one line naming the option: ``--num-aug must be non-negative (got -1)``."""
    err = error.errors()[0]
    option = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "options"
    ctx = err.get("ctx") or {}
    if err["type"] in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        if bound == 0:
            what = "must be non-negative" if err["type"] == "greater_than_equal" else "must be positive"
        elif bound == 1 and err["type"] == "greater_than_equal":
            what = "must be positive"
        else:
            what = f"must be {'>=' if err['type'] == 'greater_than_equal' else '>'} {bound}"
    elif err["type"] == "literal_error":
        what = f"invalid choice: {err['input']!r} (choose from {ctx.get('expected')})"
        return f"{option}: {what}"
    else:
        what = err["msg"][0].lower() + err["msg"][1:]
        if what.startswith("value error, "):
            what = what[len("value error, "):]
    return f"{option} {what} (got {err['input']!r})" if err["loc"] else what


def parse_config(config_cls: Type[C], argv: Optional[Sequence[str]] = None, description: Optional[str] = None,
                 parser: Optional[argparse.ArgumentParser] = None) -> C:
    """Command line -> validated config; a refused value is an :class:`OptionError` naming the option."""
    parser = parser or config_parser(config_cls, description)
    args = parser.parse_args(argv)
    try:
        return config_cls(**vars(args))
    except pydantic.ValidationError as e:
        raise OptionError(describe_validation_error(e)) from None


def run_cli(main: Callable[[Optional[Sequence[str]]], Any], argv: Optional[Sequence[str]] = None) -> None:
    """Run a builder's ``main``; a user mistake becomes one ``error: <message>`` line and exit status 2.

    :class:`DatasetError` (a bad file, option or a full disk) and ``OSError`` (a file that cannot
    be read or written) get one clear line instead of a traceback.
    """
    try:
        main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(getattr(e, "exit_status", 2))
    except OSError as e:
        print(f"error: {e.filename}: {e.strerror}" if e.filename else f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        sys.exit(130)


def resolve_source_csv(source_repo: str, set_name: str) -> str:
    """Path of ``<set_name>.csv``: from a local folder when ``source_repo`` is one, else from Hugging Face.

    The download (the original builders' only source) needs a network; when it fails the
    error says how to work offline instead.
    """
    if os.path.isdir(source_repo):
        path = os.path.join(source_repo, f"{set_name}.csv")
        if not os.path.isfile(path):
            raise DatasetError(f"{path}: missing; a local --source-repo folder must hold train.csv and test.csv")
        return path
    offline_advice = ("To work offline, pass --source-repo <folder holding train.csv and test.csv> "
                      "or generate puzzles with --generate N")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DatasetError(f"--source-repo {source_repo}: not a local folder, and huggingface_hub is not installed. "
                           + offline_advice) from None
    # Without a network the hub client retries for ~20 s before failing; when the hub's host does
    # not even resolve, only the local download cache is searched, and the failure is immediate.
    if not _hub_host_resolves():
        try:
            return hf_hub_download(source_repo, f"{set_name}.csv", repo_type="dataset", local_files_only=True)
        except Exception:
            raise DatasetError(f"--source-repo {source_repo}: not a local folder, Hugging Face is unreachable (offline) "
                               f"and {set_name}.csv is not in its download cache. " + offline_advice) from None
    print(f"downloading {set_name}.csv from Hugging Face dataset {source_repo} ...", flush=True)
    try:
        return hf_hub_download(source_repo, f"{set_name}.csv", repo_type="dataset")
    except Exception as e:  # any network / hub failure ends in the same advice
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatasetError(f"--source-repo {source_repo}: not a local folder, and downloading {set_name}.csv from "
                           f"Hugging Face failed ({type(e).__name__}: {reason}). " + offline_advice) from None


def _hub_host_resolves() -> bool:
    """Whether the Hugging Face endpoint's host name resolves (always assumed so behind a proxy)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.getaddrinfo(host, 443)
        return True
    except (OSError, UnicodeError):
        return False


class PuzzleCSV:
    """Fast reader for the builders' CSV layout: a header line, then ``source,question,answer,rating``.

    The whole file is scanned with numpy (line and comma positions) instead of Python's csv
    module, so a few-million-row file parses in about a second. Quoted files fall back to the
    csv module once and are then handled the same way. Fields are extracted on demand for the
    rows that are actually used.
    """

    FIELDS = ("source", "question", "answer", "rating")
    _SCAN_CHUNK = 1 << 24  # bytes compared per step when locating line breaks and commas

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    raise DatasetError(f"{path}: empty file; expected a header line 'source,question,answer,rating'")
                # Memory-mapped: the file is scanned in place, never copied into Python bytes.
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
        data = self._mm
        if data.find(b'"') >= 0:
            data = self._unquote(data[:])
        buf = np.frombuffer(data, dtype=np.uint8)
        newlines, commas = [], []
        for start in range(0, buf.size, self._SCAN_CHUNK):
            chunk = buf[start: start + self._SCAN_CHUNK]
            newlines.append(np.flatnonzero(chunk == ord("\n")) + start)
            commas.append(np.flatnonzero(chunk == ord(",")) + start)
        newlines, commas = np.concatenate(newlines), np.concatenate(commas)
        starts = np.concatenate([[0], newlines + 1])
        ends = np.concatenate([newlines, [buf.size]])
        if data.find(b"\r") >= 0:  # Windows line ends
            has_cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == ord("\r"))
            ends = ends - has_cr
        line_numbers = np.arange(1, starts.size + 1)
        nonempty = ends > starts
        starts, ends, line_numbers = starts[nonempty], ends[nonempty], line_numbers[nonempty]
        if starts.size == 0:
            raise DatasetError(f"{path}: empty file; expected a header line 'source,question,answer,rating'")
        # The first line is the header (skipped, as the original does).
        starts, ends, line_numbers = starts[1:], ends[1:], line_numbers[1:]

        # Fast check: with exactly 3 commas per row, the data rows' commas are consecutive triples
        # lying inside their rows (an empty first or last field puts one on the row's edge).
        # Only when that fails is each row counted to name the bad one.
        row_commas = commas[np.searchsorted(commas, starts[0]) if starts.size else commas.size:]
        triples = row_commas.reshape(-1, 3) if row_commas.size == 3 * starts.size else None
        if triples is None or not (np.all(triples[:, 0] >= starts) and np.all(triples[:, 2] < ends)):
            first = np.searchsorted(commas, starts)
            count = np.searchsorted(commas, ends) - first
            i = np.flatnonzero(count != 3)[0]
            raise DatasetError(f"{path}: line {line_numbers[i]}: expected 4 comma-separated fields "
                               f"(source,question,answer,rating), found {count[i] + 1}")
        c1, c2, c3 = triples[:, 0], triples[:, 1], triples[:, 2]
        self._buf = buf
        self.line_numbers = line_numbers
        self._bounds = {
            "source": (starts, c1),
            "question": (c1 + 1, c2),
            "answer": (c2 + 1, c3),
            "rating": (c3 + 1, ends),
        }

    def __len__(self) -> int:
        return self.line_numbers.size

    def _unquote(self, raw: bytes) -> bytes:
        """Re-write a quoted CSV without quotes (puzzle fields never hold commas or line breaks)."""
        rows = list(csv.reader(io.StringIO(raw.decode("utf-8", errors="replace"))))
        for i, row in enumerate(rows):
            if any(("," in field) or ("\n" in field) for field in row):
                raise DatasetError(f"{self.path}: line {i + 1}: a field contains a comma or line break")
        return "\n".join(",".join(row) for row in rows).encode()

    def lengths(self, field: str) -> np.ndarray:
        start, end = self._bounds[field]
        return end - start

    def check_nonempty(self, *fields: str) -> None:
        """No row may leave one of ``fields`` empty (the first such row is named)."""
        for field in fields:
            empty = np.flatnonzero(self.lengths(field) == 0)
            if empty.size:
                raise DatasetError(f"{self.path}: line {self.line_numbers[empty[0]]}: the {field} field is empty")

    def fixed_width(self, field: str, rows: np.ndarray, width: int) -> np.ndarray:
        """``[len(rows), width]`` uint8 character codes of ``field`` (callers check lengths first)."""
        start = self._bounds[field][0][rows]
        return self._buf[start[:, None] + np.arange(width)]

    def check_width(self, field: str, width: int) -> None:
        """Every row's ``field`` must have exactly ``width`` characters."""
        bad = np.flatnonzero(self.lengths(field) != width)
        if bad.size:
            i = bad[0]
            raise DatasetError(f"{self.path}: line {self.line_numbers[i]}: {field} has {self.lengths(field)[i]} "
                               f"characters, expected {width}")

    def ratings(self) -> np.ndarray:
        """The ``rating`` column as int64 (non-negative integers)."""
        start, end = self._bounds["rating"]
        length = end - start
        width = int(length.max()) if length.size else 0
        if width > 18:
            i = int(np.argmax(length))
            raise DatasetError(f"{self.path}: line {self.line_numbers[i]}: rating is not an integer")
        j = np.arange(width)
        inside = j[None, :] < length[:, None]
        chars = np.where(inside, self._buf[np.minimum(start[:, None] + j, self._buf.size - 1)], ord("0"))
        bad = np.flatnonzero((length == 0) | np.any(inside & ((chars < ord("0")) | (chars > ord("9"))), axis=1))
        if bad.size:
            i = bad[0]
            text = bytes(self._buf[start[i]: end[i]]).decode(errors="replace")
            raise DatasetError(f"{self.path}: line {self.line_numbers[i]}: rating {text!r} is not a non-negative integer")
        # Right-align the digits so every column has a fixed power of ten.
        power = (length[:, None] - 1 - j[None, :]).clip(min=0)
        return np.sum(np.where(inside, (chars - ord("0")).astype(np.int64) * (10 ** power), 0), axis=1)


def subsample_rows(num_rows: int, subsample_size: Optional[int], rng: np.random.Generator) -> np.ndarray:
    """Row indices to keep: a random subset without replacement (in random order, as the original), or all."""
    if subsample_size is not None and subsample_size < num_rows:
        return rng.choice(num_rows, size=subsample_size, replace=False)
    return np.arange(num_rows)
