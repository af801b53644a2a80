"""Dataset format shared by every builder and by the loader.

A dataset directory holds ``train/`` and ``test/``; each has ``dataset.json``
(:class:`PuzzleDatasetMetadata`) and, per set name ``S`` listed in it, the arrays
``S__inputs.npy``, ``S__labels.npy``, ``S__puzzle_identifiers.npy``,
``S__puzzle_indices.npy`` and ``S__group_indices.npy``. The top level holds
``identifiers.json`` (identifier id -> name, ``"<blank>"`` for 0).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import mmap
import os
import shutil
import socket
import sys
import tempfile
import urllib.parse
from typing import Callable, Dict, Iterator, List, Optional, Sequence

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
        f.write(json.dumps(names))  # dumps uses the C encoder; dump(obj, f) does not (slow for 1M names)


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
    # mkdtemp makes a private (0700) folder; give the dataset the permissions of a normal mkdir.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
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


# ----------------------------------------------------------------------------------------------
# Helpers shared by the Sudoku, maze and ARC builders.

def run_cli(main: Callable[[Optional[Sequence[str]]], None], argv: Optional[Sequence[str]] = None) -> None:
    """Run a builder's ``main``; a :class:`DatasetError` becomes ``error: <message>`` and exit status 1.

    User mistakes (bad files, bad options) get one clear line instead of a traceback.
    """
    try:
        main(argv)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
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
        # lying inside their rows. Only when that fails is each row counted to name the bad one.
        row_commas = commas[np.searchsorted(commas, starts[0]) if starts.size else commas.size:]
        triples = row_commas.reshape(-1, 3) if row_commas.size == 3 * starts.size else None
        if triples is None or not (np.all(triples[:, 0] > starts) and np.all(triples[:, 2] < ends)):
            first = np.searchsorted(commas, starts)
            count = np.searchsorted(commas, ends) - first
            bad = np.flatnonzero(count != 3)
            i = bad[0]
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


class NpyWriter:
    """Write one ``.npy`` array of known shape block by block, so the whole array never sits in memory."""

    def __init__(self, path: str, shape: Sequence[int], dtype: np.dtype):
        self.path, self.shape, self.dtype = path, tuple(int(s) for s in shape), np.dtype(dtype)
        self._rows = 0
        self._file = open(path, "wb")
        np.lib.format.write_array_header_1_0(self._file, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape})

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.path}: block shape {block.shape} does not fit array shape {self.shape}")
        self._rows += block.shape[0]
        self._file.write(block.data)

    def close(self) -> None:
        self._file.close()
        if self._rows != self.shape[0]:
            raise ValueError(f"{self.path}: wrote {self._rows} rows, header says {self.shape[0]}")

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self._file.close()
