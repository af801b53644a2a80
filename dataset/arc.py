"""ARC task rules: tasks and their grids, the original builders' random stream, augmentation with
duplicate rejection, and the encoder that draws a task's versions onto canvases (30x30 by default).

The results are the original builders' byte for byte for the same seed: ``LegacyRandomStream``
reproduces their ``np.random`` stream while the work is done with numpy in bulk, so puzzle
identifiers (hence released checkpoints' puzzle embeddings) line up with datasets the original
wrote. Grid format and version names live in ``dataset/arc_grid.py``. Used by
``dataset/build_arc_dataset.py`` (the command line) and by ``tasks/arc.py`` (encoding puzzles
given at prediction time the way the builder would).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import numpy as np
from tqdm import tqdm  # tqdm.write: a message that does not break the bars

from dataset.arc_grid import (ARC_MAX_GRID_SIZE, COLOUR_OFFSET, DEFAULT_CANVAS, EOS_TOKEN, NON_TRANSPOSING, NUM_COLOURS,
                              PAD_TOKEN, SEQ_LEN, Canvas, arc_grid_to_np, aug_names)
from dataset.common import DatasetError

# The original tries up to this many augmentations per requested one before giving up on a task.
ARC_AUGMENT_RETRIES_FACTOR = 5

# Dihedral transforms that swap height and width.
_TRANSPOSING = (1, 3, 6, 7)


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
# Tasks

@dataclass
class ARCTask:
    name: str
    source: str  # file the task came from, for error messages
    raw: dict  # the JSON object (written to test_puzzles.json for test tasks)
    train_pairs: List[Tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # -> train split
    test_pairs: List[Tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # -> test split
    versions: List[Tuple[int, np.ndarray]] = field(default_factory=list)  # (transform id, colour map)
    names: List[str] = field(default_factory=list)  # identifier names of the versions
    _geometry: Optional["TaskGeometry"] = None

    @property
    def geometry(self) -> "TaskGeometry":
        """Cell positions of all grids under every transform (built once, used by both phases)."""
        if self._geometry is None:
            self._geometry = TaskGeometry(self.pairs)
        return self._geometry

    @property
    def pairs(self) -> List[Tuple[np.ndarray, np.ndarray]]:
        return self.train_pairs + self.test_pairs


def convert_task(name: str, raw: dict, source: str, test_examples_to_test: bool,
                 max_shape: Optional[Tuple[int, int]] = (ARC_MAX_GRID_SIZE, ARC_MAX_GRID_SIZE)) -> ARCTask:
    """Validate a task's grids; train examples go to train, test examples to test or train.

    ``max_shape``: the largest grid the canvas takes (None: any, for fitting a canvas afterwards).
    """
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
            dest.append((arc_grid_to_np(example["input"], f"{where}.input", max_shape),
                         arc_grid_to_np(example["output"], f"{where}.output", max_shape)))
    if not task.train_pairs or (test_examples_to_test and not task.test_pairs):
        raise DatasetError(f"{source}: task {name}: has no {'train' if not task.train_pairs else 'test'} examples")
    return task


# ----------------------------------------------------------------------------------------------
# Augmentation with duplicate rejection

class TaskGeometry:
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


@lru_cache(maxsize=8)
def _fingerprint_weights(side: int) -> Tuple[np.ndarray, np.ndarray]:
    """Cell weights ``[side * side]`` and shape weights ``[(side + 1) ** 2]``; the tables above for 30."""
    if side <= ARC_MAX_GRID_SIZE:
        return _FP_CELL, _FP_SHAPE
    rng = np.random.default_rng((0x5EED, side))
    cell = rng.integers(0, 2 ** 64, size=side * side, dtype=np.uint64) | np.uint64(1)
    return cell, rng.integers(0, 2 ** 64, size=(side + 1) ** 2, dtype=np.uint64)


def _fingerprint_tables(geo: TaskGeometry, canvas: Canvas = DEFAULT_CANVAS) -> Tuple[np.ndarray, np.ndarray]:
    """Per grid and transform: colour sums ``[G, 8, 10]`` and shape terms ``[G, 8]``.

    The fingerprint of a grid recoloured by ``map`` is ``shape + sum_v (map[v] + 1) * C[v]``
    with ``C[v]`` the sum of random 64-bit cell weights over the cells of colour ``v``
    (arithmetic mod 2^64). Two different grids collide with probability about 2^-64, so equal
    fingerprints stand for the original's equal SHA-256 hashes, at a tiny fraction of the cost.
    """
    side = max(canvas.height, canvas.width, ARC_MAX_GRID_SIZE)
    cell_weights, shape_weights = _fingerprint_weights(side)
    colour_sums = np.zeros((geo.num_grids, 8, NUM_COLOURS), dtype=np.uint64)
    shape_terms = np.zeros((geo.num_grids, 8), dtype=np.uint64)
    for t in canvas.transforms:  # the other maps are never drawn on this canvas
        weights = cell_weights[geo.rows[t].astype(np.int64) * side + geo.cols[t]]
        np.add.at(colour_sums[:, t], (geo.grid_of, geo.values), weights)
        shape_terms[:, t] = shape_weights[geo.shapes[t][:, 0] * (side + 1) + geo.shapes[t][:, 1]]
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


def plan_augmentations(task: ARCTask, num_aug: int, stream: LegacyRandomStream, canvas: Canvas = DEFAULT_CANVAS) -> None:
    """Fill ``task.versions``: the original plus up to ``num_aug`` distinct augmentations.

    Same draws and the same rejections as the original loop (try up to 5*num_aug times, drop
    a version whose examples equal those of an earlier one, stop at num_aug), done in batches.
    On a non-square canvas the drawn dihedral map ``t`` becomes ``NON_TRANSPOSING[t % 4]``
    (uniform over the maps that keep every grid inside the canvas).
    """
    identity = np.arange(NUM_COLOURS, dtype=np.uint8)
    task.versions = [(0, identity)]
    if num_aug <= 0:
        return
    geo = task.geometry
    colour_sums, shape_terms = _fingerprint_tables(geo, canvas)
    original_key = _puzzle_keys(colour_sums, shape_terms, np.array([0]), identity[None])[0]

    limit = ARC_AUGMENT_RETRIES_FACTOR * num_aug
    trans_all, maps_all, ends_all, keys_all = [], [], [], []
    tried = 0
    next_start = stream.pos
    while True:
        batch = min(limit - tried, max(num_aug, 64) if tried == 0 else max(64, (limit - tried) // 4))
        trans, maps, ends = stream.aug_plans(next_start, batch)
        if not canvas.square:
            trans = np.array(NON_TRANSPOSING)[trans % len(NON_TRANSPOSING)]
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
# Augmentations at test time (views of a grid that has no trained version of its own)

def view_transforms(canvas: Canvas) -> Tuple[int, ...]:
    """The dihedral maps that show the grids of ``canvas`` differently and keep them on it: all 8
    on a square canvas; on a canvas of one-row grids (height 2, the row and the end markers below
    it: 1D-ARC's 2x94) the identity and the horizontal flip (a vertical flip leaves a row as it is,
    a half turn is the horizontal flip); likewise the vertical flip for one-column grids; on any
    other canvas the builder's (:attr:`Canvas.transforms`)."""
    if canvas.square:
        return canvas.transforms
    if canvas.height <= 2:
        return (0, 4)
    if canvas.width <= 2:
        return (0, 5)
    return canvas.transforms


def draw_augmentations(words: np.ndarray, canvas: Canvas) -> Tuple[np.ndarray, np.ndarray]:
    """Augmentations from uniform 64-bit words ``[..., NUM_COLOURS]``: dihedral map ids ``[...]``
    among :func:`view_transforms` and colour maps ``[..., NUM_COLOURS]`` of the builder's kind
    (colour 0 stays, colours 1..9 permuted)."""
    words = np.asarray(words, dtype=np.uint64)
    transforms = np.array(view_transforms(canvas), dtype=np.int64)
    trans = transforms[(words[..., 0] % np.uint64(len(transforms))).astype(np.int64)]
    perm = np.argsort(words[..., 1:NUM_COLOURS], axis=-1, kind="stable") + 1
    maps = np.concatenate([np.zeros(perm.shape[:-1] + (1,), dtype=np.int64), perm], axis=-1)
    return trans, maps


# ----------------------------------------------------------------------------------------------
# Encoding

def translations(stream: LegacyRandomStream, tasks_versions: List[Tuple[int, List[int], List[int]]],
                  translate: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Per example of one group: top-left offsets ``(rows, cols)``, drawn as the original does.

    ``tasks_versions`` lists per version ``(num_examples, row_bounds, col_bounds)``. For each
    version the original draws which example stays untranslated, then for every other example
    a row and a column offset; bounds are ``30 - max(input, output extent)``. This tight loop
    is the only per-example Python in the builder: the draws are sequential by nature.
    """
    total = sum(v[0] for v in tasks_versions)
    largest = max([n - 1 for n, _, _ in tasks_versions] + [max(r + c) for _, r, c in tasks_versions if r])
    need = 3 * (len(tasks_versions) + (2 * total if translate else 0)) + 1024
    while True:
        raw = stream.window(stream.pos, need).tolist()
        try:
            offsets_r, offsets_c = [0] * total, [0] * total
            p, row = 0, 0
            masks = _MASKS if largest < len(_MASKS) else [_mask_for(b) for b in range(largest + 1)]
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


def encode_group(task: ARCTask, geo: TaskGeometry, pair_offset: int, num_pairs: int,
                 offsets_r: np.ndarray, offsets_c: np.ndarray, buffer: np.ndarray,
                 canvas: Canvas = DEFAULT_CANVAS) -> Tuple[np.ndarray, np.ndarray]:
    """Encoded ``[versions * num_pairs, canvas.seq_len]`` inputs and labels of one group (views into ``buffer``).

    Pairs ``pair_offset .. pair_offset + num_pairs`` of ``geo`` are drawn into canvases (30x30 by default)
    for every version (its transform and colour map) at the given offsets, with EOS markers:
    one scatter of colour tokens and one of EOS tokens per transform, over all versions using
    it. ``buffer`` is reused across groups (no fresh pages to fault in every time).
    """
    num_rows = len(task.versions) * num_pairs
    seq_len, stride = canvas.seq_len, canvas.width
    plane = num_rows * seq_len  # inputs in [0, plane), labels in [plane, 2 * plane)
    out = buffer[: 2 * plane + 1]
    out.fill(PAD_TOKEN)
    trash = 2 * plane  # invalid EOS cells (just outside the canvas) are written here
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
        base = (rows * seq_len + r0 * stride + c0).astype(idx_dtype)

        where = (grid % 2) * plane + geo.rows[t][cells].astype(np.int64) * stride + geo.cols[t][cells]
        out[base[:, grid // 2] + where.astype(idx_dtype)[None, :]] = tokens_of[vs][:, values]

        eos = (geo.eos_grid[t] >= first) & (geo.eos_grid[t] < last)
        e_grid = geo.eos_grid[t][eos] - first
        e_where = (e_grid % 2) * plane + geo.eos_rows[t][eos] * stride + geo.eos_cols[t][eos]
        height, width = geo.shapes[t][first:last, 0], geo.shapes[t][first:last, 1]
        below = geo.eos_below[t][eos]
        inside = np.where(below[None, :], r0[:, e_grid // 2] + height[e_grid][None, :] < canvas.height,
                          c0[:, e_grid // 2] + width[e_grid][None, :] < canvas.width)
        out[np.where(inside, base[:, e_grid // 2] + e_where.astype(idx_dtype)[None, :], trash)] = EOS_TOKEN
    return out[:plane].reshape(num_rows, seq_len), out[plane: 2 * plane].reshape(num_rows, seq_len)


def version_bounds(geo: TaskGeometry, pair_offset: int, num_pairs: int,
                   canvas: Canvas = DEFAULT_CANVAS) -> Dict[int, Tuple[List[int], List[int]]]:
    """Per transform the canvas admits: the translation bounds (canvas height and width minus
    the larger extent of input and output) of each pair."""
    bounds = {}
    for t in canvas.transforms:
        shapes = geo.shapes[t][2 * pair_offset: 2 * (pair_offset + num_pairs)].reshape(num_pairs, 2, 2)
        extent = shapes.max(axis=1)
        bounds[t] = ((canvas.height - extent[:, 0]).tolist(), (canvas.width - extent[:, 1]).tolist())
    return bounds


def version_names(task: ARCTask) -> List[str]:
    """Names of a task's versions: the plain name first, then the augmented name of each augmentation."""
    augmented = task.versions[1:]
    if not augmented:
        return [task.name]
    return [task.name] + aug_names(task.name, [t for t, _ in augmented], np.stack([m for _, m in augmented]))
