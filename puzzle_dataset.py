"""Memory-mapped loader for the puzzle dataset format (docs/datasets.md "Bring your own task" describes it).

``PuzzleDataset(config, split)`` is an ``IterableDataset`` that yields ready-made global-batch
slices ``(set_name, batch, global_effective_batch_size)`` where ``batch`` holds int32 tensors
``inputs [B, S]``, ``labels [B, S]`` (ignored positions are -100) and ``puzzle_identifiers [B]``.
It is meant to be wrapped in a ``DataLoader(dataset, batch_size=None, num_workers<=1)``.

Train mode follows the original HRM sampler: for every pass ("iteration" of
``epochs_per_iter`` epochs) the group order is a fresh permutation per epoch, drawn from
``Philox(seed + pass_counter)``; each group contributes one randomly chosen puzzle whose
examples are taken in random order without replacement until the global batch is full; the
last incomplete batch is dropped. Unlike the original, every random choice comes from that
seeded generator, so the data order is a pure function of ``(seed, pass_counter)``, which is
what makes exact resume (``start_iter``, ``skip_batches``) possible.

Test mode walks every example once, in order, in windows of ``global_batch_size``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pydantic
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dataset.common import DATASET_FIELDS, DatasetError, PuzzleDatasetMetadata, load_metadata
from utils.config import check_batch_divisible, normalize_data_paths

IGNORE_LABEL_ID = -100

# Fields that must agree when several dataset folders are merged into one stream.
_MERGE_MUST_AGREE = ("seq_len", "vocab_size", "pad_id", "ignore_label_id", "blank_identifier_id", "sets")

# Rows per chunk when scanning the memory-mapped token arrays for out-of-range values;
# bounded so the check never materialises a large temporary.
_TOKEN_CHECK_ROWS = 1 << 16


class PuzzleDatasetConfig(pydantic.BaseModel):
    """Loader settings. ``dataset_path`` (HRM spelling) is accepted and becomes ``[dataset_path]``.

    ``start_iter`` is the number of train passes (``__iter__`` calls) already made: the next pass
    uses ``seed + start_iter + 1`` for a single-set dataset, as the original's pass counter;
    ``skip_batches`` batches of that first pass (counted over all its sets and folders) are drawn
    but not read, so that a resumed run sees exactly the batches an uninterrupted run would.

    ``unused_pass_before_each``: every train pass is preceded by one that is counted but not
    drawn, so pass ``i`` yields what pass ``2 i + 1`` would (both counted from 0). This is the
    order that the URM code trains on on rank 0, where its loop iterates the loader once per pass
    to count the batches before training on it (a whole extra pass over the data, which this
    loader does not draw).
    """

    seed: int
    dataset_paths: List[str]
    global_batch_size: int
    test_set_mode: bool
    epochs_per_iter: int
    rank: int
    num_replicas: int
    start_iter: int = 0
    skip_batches: int = 0
    unused_pass_before_each: bool = False
    # Test mode only: walk just the first N examples of the split (file order, set by set), then
    # split them across ranks as usual, so every number of processes sees the same subset.
    max_examples: Optional[int] = None

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_hrm_spelling(cls, values: Any) -> Any:
        if isinstance(values, dict) and ("dataset_path" in values or isinstance(values.get("dataset_paths"), str)):
            values = dict(values)
            values["dataset_paths"] = normalize_data_paths(values.pop("dataset_path", None), values.get("dataset_paths"),
                                                           names=("dataset_path", "dataset_paths"))
        return values

    @pydantic.model_validator(mode="after")
    def _check(self) -> "PuzzleDatasetConfig":
        if not self.dataset_paths:
            raise ValueError("dataset_paths is empty: give at least one dataset folder")
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in [0, num_replicas={self.num_replicas})")
        if self.global_batch_size < 1:
            raise ValueError(f"global_batch_size must be positive, got {self.global_batch_size}")
        check_batch_divisible(self.global_batch_size, self.num_replicas)
        if self.epochs_per_iter < 1:
            raise ValueError(f"epochs_per_iter must be at least 1, got {self.epochs_per_iter}")
        if self.start_iter < 0 or self.skip_batches < 0:
            raise ValueError("start_iter and skip_batches must be non-negative")
        if self.max_examples is not None and (self.max_examples < 1 or not self.test_set_mode):
            raise ValueError(f"max_examples must be a positive number of examples of a test-mode pass, got {self.max_examples}"
                             + ("" if self.test_set_mode else " with test_set_mode=False"))
        return self

    @property
    def dataset_path(self) -> str:
        """HRM spelling: the first dataset folder."""
        return self.dataset_paths[0]


def read_npy_header(path: str) -> Tuple[Tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file, reading only its header."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: missing")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = read_header(f)
            data_start = f.tell()
    except (ValueError, OSError) as e:
        raise DatasetError(f"{path}: not a valid .npy file ({e})") from None
    needed = data_start + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    size = os.path.getsize(path)
    if size < needed:
        raise DatasetError(f"{path}: truncated ({size} bytes, its header announces {needed}); rebuild the dataset")
    return tuple(shape), np.dtype(dtype)


@dataclass
class _Source:
    """One set of one dataset folder: the unit the loader iterates over."""

    set_name: str
    split_dir: str
    num_examples: int
    num_puzzles: int
    num_groups: int
    data: Optional[Dict[str, np.ndarray]] = None

    def path(self, field: str) -> str:
        return os.path.join(self.split_dir, f"{self.set_name}__{field}.npy")


def _check_headers(split_dir: str, set_name: str, meta: PuzzleDatasetMetadata) -> _Source:
    """Validate file presence, dtypes and shapes of one set from the headers alone."""
    shapes = {}
    for field in DATASET_FIELDS:
        path = os.path.join(split_dir, f"{set_name}__{field}.npy")
        if not os.path.isfile(path):
            raise DatasetError(f"{path}: missing (set '{set_name}' is listed in {os.path.join(split_dir, 'dataset.json')})")
        shape, dtype = read_npy_header(path)
        if not np.issubdtype(dtype, np.integer):
            raise DatasetError(f"{path}: dtype {dtype} is not an integer type")
        shapes[field] = shape

    def where(field: str) -> str:
        return os.path.join(split_dir, f"{set_name}__{field}.npy")

    inp = shapes["inputs"]
    if len(inp) != 2 or inp[1] != meta.seq_len:
        raise DatasetError(f"{where('inputs')}: shape {inp}, expected [N, seq_len={meta.seq_len}]")
    if shapes["labels"] != inp:
        raise DatasetError(f"{where('labels')}: shape {shapes['labels']} differs from inputs {inp}")
    for field in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
        if len(shapes[field]) != 1:
            raise DatasetError(f"{where(field)}: shape {shapes[field]}, expected a 1-D array")
    num_puzzles = shapes["puzzle_identifiers"][0]
    if shapes["puzzle_indices"][0] != num_puzzles + 1:
        raise DatasetError(f"{where('puzzle_indices')}: {shapes['puzzle_indices'][0]} entries, expected "
                           f"{num_puzzles + 1} (one more than the {num_puzzles} puzzle identifiers)")
    if shapes["group_indices"][0] < 1:
        raise DatasetError(f"{where('group_indices')}: empty, expected at least the leading 0")
    return _Source(set_name, split_dir, inp[0], num_puzzles, shapes["group_indices"][0] - 1)


def chunked_min_max(arr: np.ndarray) -> Tuple[int, int]:
    lo, hi = None, None
    for start in range(0, len(arr), _TOKEN_CHECK_ROWS):
        chunk = np.asarray(arr[start: start + _TOKEN_CHECK_ROWS])
        if chunk.size == 0:
            continue
        c_lo, c_hi = int(chunk.min()), int(chunk.max())
        lo = c_lo if lo is None else min(lo, c_lo)
        hi = c_hi if hi is None else max(hi, c_hi)
    return (0, 0) if lo is None else (lo, hi)


class PuzzleDataset(IterableDataset):
    """Iterable over global-batch slices of one or several dataset folders (see module docstring)."""

    def __init__(self, config: PuzzleDatasetConfig, split: str = "train"):
        super().__init__()
        self.config = config
        self.split = split
        self.local_batch_size = config.global_batch_size // config.num_replicas

        metas = [load_metadata(os.path.join(path, split)) for path in config.dataset_paths]
        # Iteration order of the TRM loader: for each set, each folder in turn.
        self._sources: List[_Source] = []
        per_path_sources: List[List[_Source]] = []
        for path, meta in zip(config.dataset_paths, metas):
            split_dir = os.path.join(path, split)
            srcs = [_check_headers(split_dir, s, meta) for s in meta.sets]
            groups = sum(s.num_groups for s in srcs)
            if groups != meta.total_groups:
                raise DatasetError(f"{os.path.join(split_dir, 'dataset.json')}: total_groups={meta.total_groups} "
                                   f"but the group_indices files hold {groups} groups")
            per_path_sources.append(srcs)
        for set_idx in range(len(metas[0].sets)):
            self._sources.extend(srcs[set_idx] for srcs in per_path_sources)

        self.metadata = self._merge_metadata(metas, per_path_sources)

        self._data_loaded = False
        # The original's ``self._iters``: it advances once per stream, so after ``start_iter``
        # completed passes it stands at start_iter * streams (twice that with unused passes).
        self._iters = config.start_iter * len(self._sources) * (2 if config.unused_pass_before_each else 1)
        self._skip_batches = config.skip_batches

    @property
    def pass_counter(self) -> int:
        """Passes drawn so far (the original's ``_iters``); the next train stream uses ``seed + pass_counter + 1``.

        Every ``__iter__`` in train mode advances it by ``num_streams`` (one per set of each folder,
        1 for the usual single-set dataset). Note that inside a DataLoader worker the worker's copy
        advances, not this one.
        """
        return self._iters

    @property
    def num_streams(self) -> int:
        """Number of (set, folder) streams iterated one after another per pass."""
        return len(self._sources)

    # ------------------------------------------------------------------ metadata
    def _merge_metadata(self, metas: List[PuzzleDatasetMetadata],
                        per_path_sources: List[List[_Source]]) -> PuzzleDatasetMetadata:
        paths = self.config.dataset_paths
        totals = [m.total_puzzles if m.total_puzzles is not None else sum(s.num_puzzles for s in srcs)
                  for m, srcs in zip(metas, per_path_sources)]
        if len(metas) == 1:
            return metas[0].model_copy(update={"total_puzzles": totals[0]})

        first = metas[0]
        for path, meta in zip(paths[1:], metas[1:]):
            for field in _MERGE_MUST_AGREE:
                a, b = getattr(first, field), getattr(meta, field)
                if a != b:
                    raise DatasetError(f"{os.path.join(path, self.split, 'dataset.json')}: {field}={b!r} differs from "
                                       f"{field}={a!r} in {os.path.join(paths[0], self.split, 'dataset.json')}; "
                                       "merged datasets must agree on it")
        total_puzzles = sum(totals)
        mean = sum(m.mean_puzzle_examples * t for m, t in zip(metas, totals)) / max(total_puzzles, 1)
        # Identifier counts add up, as in TRM: builders offset each dataset's identifiers
        # (``--puzzle-identifiers-start``) so the merged table has room for all of them.
        return first.model_copy(update={
            "num_puzzle_identifiers": sum(m.num_puzzle_identifiers for m in metas),
            "total_groups": sum(m.total_groups for m in metas),
            "total_puzzles": total_puzzles,
            "mean_puzzle_examples": mean,
        })

    # ------------------------------------------------------------------ loading
    def _lazy_load_dataset(self) -> None:
        if self._data_loaded:
            return
        for src in self._sources:
            self._load_source(src)
        self._data_loaded = True

    def _load_source(self, src: _Source) -> None:
        meta = self.metadata
        data = {
            "inputs": np.load(src.path("inputs"), mmap_mode="r"),
            "labels": np.load(src.path("labels"), mmap_mode="r"),
        }
        # Index arrays are small and read on every batch: keep them in memory as int64.
        for field in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
            data[field] = np.load(src.path(field)).astype(np.int64, copy=False)

        pi, gi, ids = data["puzzle_indices"], data["group_indices"], data["puzzle_identifiers"]
        if pi[0] != 0 or np.any(np.diff(pi) < 0) or pi[-1] != src.num_examples:
            raise DatasetError(f"{src.path('puzzle_indices')}: must rise from 0 to the number of examples "
                               f"({src.num_examples}); got {pi[0]} .. {pi[-1]}")
        if gi[0] != 0 or np.any(np.diff(gi) < 0) or gi[-1] != src.num_puzzles:
            raise DatasetError(f"{src.path('group_indices')}: must rise from 0 to the number of puzzles "
                               f"({src.num_puzzles}); got {gi[0]} .. {gi[-1]}")
        if ids.size and (ids.min() < 0 or ids.max() >= meta.num_puzzle_identifiers):
            raise DatasetError(f"{src.path('puzzle_identifiers')}: identifiers must lie in "
                               f"[0, num_puzzle_identifiers={meta.num_puzzle_identifiers}); got {ids.min()} .. {ids.max()}")

        lo, hi = chunked_min_max(data["inputs"])
        if lo < 0 or hi >= meta.vocab_size:
            raise DatasetError(f"{src.path('inputs')}: tokens must lie in [0, vocab_size={meta.vocab_size}); got {lo} .. {hi}")
        lo, hi = chunked_min_max(data["labels"])
        if hi >= meta.vocab_size or (lo < 0 and not self._negative_labels_are_ignored(data["labels"])):
            raise DatasetError(f"{src.path('labels')}: labels must lie in [0, vocab_size={meta.vocab_size}) or equal "
                               f"ignore_label_id={meta.ignore_label_id}; got {lo} .. {hi}")

        data["single_example_puzzles"] = bool(np.all(np.diff(pi) == 1))
        src.data = data

    def batches_per_pass(self) -> Optional[int]:
        """Train batches one pass yields when every puzzle holds one example (Sudoku, mazes): each
        epoch then draws one example per group and the incomplete last batch of a stream is
        dropped. None otherwise (the count then depends on the draws)."""
        total = 0
        for src in self._sources:
            starts = np.load(src.path("puzzle_indices"), mmap_mode="r")
            if not np.all(np.diff(starts) == 1):
                return None
            total += src.num_groups * self.config.epochs_per_iter // self.config.global_batch_size
        return total

    @property
    def num_examples(self) -> int:
        """Examples a test-mode pass walks: the whole split, or its first ``max_examples``."""
        total = sum(src.num_examples for src in self._sources)
        return total if self.config.max_examples is None else min(total, self.config.max_examples)

    def _negative_labels_are_ignored(self, labels: np.ndarray) -> bool:
        ignore = self.metadata.ignore_label_id
        if ignore is None or ignore >= 0:
            return False
        return all(np.all(chunk[chunk < 0] == ignore) for chunk in
                   (np.asarray(labels[s: s + _TOKEN_CHECK_ROWS]) for s in range(0, len(labels), _TOKEN_CHECK_ROWS)))

    def validate(self) -> None:
        """Load every array now and run the value checks that iteration would run lazily."""
        self._lazy_load_dataset()

    # ------------------------------------------------------------------ batches
    def _collate_batch(self, inputs: np.ndarray, labels: np.ndarray, identifiers: np.ndarray) -> Dict[str, torch.Tensor]:
        batch = {
            "inputs": inputs.astype(np.int32),
            "labels": labels.astype(np.int32),
            "puzzle_identifiers": identifiers.astype(np.int32),
        }
        if self.metadata.ignore_label_id is not None:
            batch["labels"][batch["labels"] == self.metadata.ignore_label_id] = IGNORE_LABEL_ID

        pad = self.local_batch_size - batch["puzzle_identifiers"].shape[0]
        if pad > 0:
            pad_values = {"inputs": self.metadata.pad_id, "labels": IGNORE_LABEL_ID,
                          "puzzle_identifiers": self.metadata.blank_identifier_id}
            batch = {k: np.pad(v, ((0, pad),) + ((0, 0),) * (v.ndim - 1), constant_values=pad_values[k])
                     for k, v in batch.items()}
        return {k: torch.from_numpy(v) for k, v in batch.items()}

    def _iter_test(self) -> Iterator[Tuple[str, Dict[str, torch.Tensor], int]]:
        gbs, local, rank = self.config.global_batch_size, self.local_batch_size, self.config.rank
        remaining = self.config.max_examples
        for src in self._sources:
            data = src.data
            total = src.num_examples
            if remaining is not None:
                total, remaining = min(total, remaining), remaining - min(total, remaining)
            for start in range(0, total, gbs):
                end = min(total, start + gbs)
                local_start = min(start + rank * local, end)
                local_end = min(start + (rank + 1) * local, end)
                # The puzzle of example i is the last puzzle whose first example is <= i.
                puzzle_of = np.searchsorted(data["puzzle_indices"], np.arange(local_start, local_end), side="right") - 1
                batch = self._collate_batch(data["inputs"][local_start: local_end],
                                            data["labels"][local_start: local_end],
                                            data["puzzle_identifiers"][puzzle_of])
                yield src.set_name, batch, end - start

    def _iter_train(self) -> Iterator[Tuple[str, Dict[str, torch.Tensor], int]]:
        gbs, local, rank = self.config.global_batch_size, self.local_batch_size, self.config.rank
        skip, self._skip_batches = self._skip_batches, 0  # only the first pass after (re)start skips
        if self.config.unused_pass_before_each:
            self._iters += len(self._sources)  # what iterating a whole pass would advance, without drawing it
        for src in self._sources:
            self._iters += 1
            rng = np.random.Generator(np.random.Philox(seed=self.config.seed + self._iters))
            for example_ids, puzzle_ids in iter_train_batches(rng, src.data["group_indices"], src.data["puzzle_indices"],
                                                              gbs, self.config.epochs_per_iter,
                                                              src.data["single_example_puzzles"]):
                if skip > 0:
                    skip -= 1
                    continue
                mine = slice(rank * local, (rank + 1) * local)
                rows = example_ids[mine]
                yield src.set_name, self._collate_batch(src.data["inputs"][rows], src.data["labels"][rows],
                                                        src.data["puzzle_identifiers"][puzzle_ids[mine]]), gbs

    def __iter__(self):
        worker_info = get_worker_info()
        if worker_info is not None and worker_info.num_workers > 1:
            raise RuntimeError("PuzzleDataset yields whole batches from one stream: use a DataLoader with num_workers <= 1")
        self._lazy_load_dataset()
        if self.config.test_set_mode:
            yield from self._iter_test()
        else:
            yield from self._iter_train()


def iter_train_batches(rng: np.random.Generator, group_indices: np.ndarray, puzzle_indices: np.ndarray,
                       global_batch_size: int, epochs_per_iter: int,
                       single_example_puzzles: Optional[bool] = None) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Yield ``(example_ids, puzzle_ids)`` of every full global batch of one train pass.

    The group order (one permutation per epoch) is drawn first, then each batch is filled
    group by group: ``rng.integers`` picks the puzzle, ``rng.choice(..., replace=False)`` the
    order of its examples, truncated to what still fits. An incomplete last batch is dropped.
    """
    num_groups = group_indices.size - 1
    order_dtype = np.int32 if num_groups < 2 ** 31 else np.int64
    group_order = np.concatenate([rng.permutation(num_groups).astype(order_dtype) for _ in range(epochs_per_iter)])
    if single_example_puzzles is None:
        single_example_puzzles = bool(np.all(np.diff(puzzle_indices) == 1))

    if single_example_puzzles:
        # Every group then yields exactly one example and ``rng.choice(1, 1)`` draws nothing, so
        # the per-group ``integers`` calls can be made as one vectorised call per chunk of
        # batches: numpy produces the same values either way (checked in the tests).
        num_batches = group_order.size // global_batch_size
        chunk = max(1, (1 << 20) // global_batch_size)
        for first in range(0, num_batches, chunk):
            groups = group_order[first * global_batch_size: min(num_batches, first + chunk) * global_batch_size]
            puzzles = rng.integers(group_indices[groups], group_indices[groups + 1])
            examples = puzzle_indices[puzzles]
            for b in range(len(groups) // global_batch_size):
                sl = slice(b * global_batch_size, (b + 1) * global_batch_size)
                yield examples[sl], puzzles[sl]
        return

    start = 0
    while start < group_order.size:
        example_parts, puzzle_parts, size = [], [], 0
        while start < group_order.size and size < global_batch_size:
            g = group_order[start]
            start += 1
            lo, hi = group_indices[g], group_indices[g + 1]
            # integers(lo, lo + 1) and choice(1, 1) draw nothing, so skipping those calls keeps the stream.
            puzzle = int(rng.integers(lo, hi)) if hi - lo > 1 else int(lo)
            p_start = puzzle_indices[puzzle]
            p_size = int(puzzle_indices[puzzle + 1] - p_start)
            take = min(p_size, global_batch_size - size)
            offsets = rng.choice(p_size, take, replace=False) if p_size > 1 else np.zeros(take, dtype=np.int64)
            example_parts.append(p_start + offsets)
            puzzle_parts.append(np.full(take, puzzle, dtype=np.int64))
            size += take
        if size < global_batch_size:
            return  # drop the incomplete last batch, as the original does
        yield np.concatenate(example_parts), np.concatenate(puzzle_parts)


def test_pass_rows(dataset_paths: List[str], global_batch_size: int, num_replicas: int, split: str = "test",
                   max_examples: Optional[int] = None) -> Tuple[Dict[str, np.ndarray], List[np.ndarray]]:
    """What a test-mode pass of ``num_replicas`` processes walks, to read saved outputs against it.

    Returns the examples in walking order (``inputs``, ``labels`` with -100 for ignored positions,
    ``puzzle_identifiers``; the batches' padding left out) and, for every rank, the positions in
    that order of the rows it evaluated: rank r's saved outputs (padding dropped) are these rows.
    """
    config = PuzzleDatasetConfig(seed=0, dataset_paths=list(dataset_paths), global_batch_size=global_batch_size,
                                 test_set_mode=True, epochs_per_iter=1, rank=0, num_replicas=1, max_examples=max_examples)
    local = global_batch_size // num_replicas
    check_batch_divisible(global_batch_size, num_replicas)
    parts: Dict[str, List[np.ndarray]] = {}
    positions: List[List[np.ndarray]] = [[] for _ in range(num_replicas)]
    walked = 0
    # One process walks the same global batches that num_replicas processes split between them.
    for _set_name, batch, size in PuzzleDataset(config, split):
        for key, value in batch.items():
            parts.setdefault(key, []).append(value[:size].numpy())
        for rank in range(num_replicas):
            positions[rank].append(walked + np.arange(min(rank * local, size), min((rank + 1) * local, size)))
        walked += size
    examples = {key: np.concatenate(value) for key, value in parts.items()}
    return examples, [np.concatenate(p) if p else np.zeros(0, np.int64) for p in positions]


# Batches the loader worker prepares ahead of the training step.
PREFETCH_BATCHES = 8


def create_loader(config: PuzzleDatasetConfig, split: str, worker_init_fn=None):
    """A DataLoader over ``PuzzleDataset`` (one persistent worker) and the split's metadata."""
    dataset = PuzzleDataset(config, split=split)
    dataloader = DataLoader(dataset, batch_size=None, num_workers=1, prefetch_factor=PREFETCH_BATCHES, persistent_workers=True,
                            pin_memory=torch.cuda.is_available(), worker_init_fn=worker_init_fn,
                            generator=torch.Generator())  # keeps the global torch RNG untouched (exact resume)
    return dataloader, dataset.metadata
