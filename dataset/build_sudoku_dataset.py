"""Build a Sudoku dataset: from the original CSVs (local folder or Hugging Face) or generated offline.

    python dataset/build_sudoku_dataset.py --output-dir data/sudoku-extreme-1k-aug-1000 --subsample-size 1000 --num-aug 1000
    python dataset/build_sudoku_dataset.py --source-repo path/to/folder_with_train_and_test_csv ...
    python dataset/build_sudoku_dataset.py --generate 1000 --grid 6 --output-dir data/sudoku-6x6

Encoding as the original: a cell holds digit + 1 with blank = 1, PAD = 0, so vocabulary
``n + 2``; ``seq_len = n * n``; labels are the solution (``ignore_label_id`` 0 never occurs).
Train puzzles get ``num_aug`` extra shuffled copies (digit relabelling, band/row and
stack/column permutations, transpose when boxes are square); a puzzle and its copies form one
group. Everything is vectorised over puzzles; the only Python loops are the solver's search.
"""
from __future__ import annotations

import math
import os
import time
from typing import List, Literal, Optional, Sequence, Tuple

import numpy as np
import pydantic

from dataset.common import (DatasetError, PuzzleCSV, atomic_output_dir, check_output_dir, parse_config,
                            resolve_source_csv, run_cli, save_identifiers, save_split, subsample_rows)
from utils.progress import progress_bar

# Grid sizes the builder reads and generates -> (box rows, box columns). 6x6 and 8x8 Sudoku have
# boxes of 2x3 and 2x4; CSV digits are single characters, hence n <= 9.
SUDOKU_BOXES = {4: (2, 2), 6: (2, 3), 8: (2, 4), 9: (3, 3)}

# Augmented copies are produced in chunks of about this many, to bound the index temporaries.
_AUG_CHUNK = 1 << 16

# The generator gives up after this many random grids per requested puzzle (plus a few):
# duplicates are rare except when asking for more distinct puzzles than a small grid has.
GENERATE_ATTEMPTS_PER_PUZZLE = 20
GENERATE_EXTRA_ATTEMPTS = 100


class SudokuBuildConfig(pydantic.BaseModel):
    """Options of the builder; the first five are the original's."""

    source_repo: str = pydantic.Field("sapientinc/sudoku-extreme", description=(
        "Hugging Face dataset repo, or a local folder holding train.csv and test.csv"))
    output_dir: str = pydantic.Field("data/sudoku-extreme-full", description="dataset folder to write")
    subsample_size: Optional[int] = pydantic.Field(None, ge=0, description="keep this many train puzzles")
    min_difficulty: Optional[int] = pydantic.Field(None, description="keep rows with rating >= this")
    num_aug: int = pydantic.Field(0, ge=0, description="shuffled copies per train puzzle")
    seed: int = pydantic.Field(0, description="seed of subsampling, augmentation and generation")
    generate: Optional[int] = pydantic.Field(None, ge=1, json_schema_extra={"metavar": "N"}, description=(
        "generate N train puzzles offline instead of reading CSVs"))
    generate_test: Optional[int] = pydantic.Field(None, ge=0, json_schema_extra={"metavar": "M"}, description=(
        "generated test puzzles (default N // 10)"))
    grid: Literal[tuple(SUDOKU_BOXES)] = pydantic.Field(9, description="grid size for --generate")  # type: ignore


# ----------------------------------------------------------------------------------------------
# Validity

def box_shape(n: int) -> Tuple[int, int]:
    """Box ``(rows, cols)`` of an n x n Sudoku: the most square split, rows <= cols (6 -> 2x3, 9 -> 3x3)."""
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    if rows == 1 and n > 1:
        raise DatasetError(f"Sudoku grid size {n} is prime: it has no boxes")
    return rows, n // rows


def sudoku_units(n: int) -> np.ndarray:
    """``[3n, n]`` cell indices of every row, column and box of an ``n x n`` grid."""
    br, bc = box_shape(n)
    cells = np.arange(n * n).reshape(n, n)
    boxes = cells.reshape(n // br, br, n // bc, bc).transpose(0, 2, 1, 3).reshape(n, n)
    return np.concatenate([cells, cells.T, boxes])


def first_problem(puzzle: np.ndarray, solution: np.ndarray, n: int) -> Optional[str]:
    """Why ``solution`` is not a valid Sudoku consistent with ``puzzle`` (digits, 0 blank), or None."""
    if np.any((solution < 1) | (solution > n)):
        return f"solution holds a value outside 1..{n}"
    if np.any((puzzle < 0) | (puzzle > n)):
        return f"puzzle holds a value outside 0..{n}"
    clash = np.flatnonzero((puzzle != 0) & (puzzle != solution))
    if clash.size:
        r, c = divmod(int(clash[0]), n)
        return f"solution contradicts the clue at row {r + 1}, column {c + 1}"
    kinds = ["row", "column", "box"]
    for u, unit in enumerate(sudoku_units(n)):
        if not np.array_equal(np.sort(solution[unit]), np.arange(1, n + 1)):
            return f"solution repeats a digit in {kinds[u // n]} {u % n + 1}"
    return None


def invalid_solutions(solutions: np.ndarray, n: int) -> np.ndarray:
    """Boolean per row of ``[N, n*n]`` digit grids (values 1..n): True where some unit is not a permutation."""
    # A unit of n cells is a permutation of 1..n iff the OR of the bits 1 << digit covers all n.
    # uint16 bits (n <= 15) and chunks of rows keep the [rows, 3n, n] temporaries small.
    units, full = sudoku_units(n), (1 << (n + 1)) - 2
    bad = np.empty(solutions.shape[0], dtype=bool)
    for start in range(0, solutions.shape[0], _AUG_CHUNK):
        digits = solutions[start: start + _AUG_CHUNK]
        out_of_range = np.any((digits < 1) | (digits > n), axis=1)
        bits = np.left_shift(np.uint16(1), np.clip(digits, 0, 15).astype(np.uint16))[:, units]
        bad[start: start + _AUG_CHUNK] = np.any(np.bitwise_or.reduce(bits, axis=-1) != full, axis=1) | out_of_range
    return bad


def inconsistent_with_clues(puzzles: np.ndarray, solutions: np.ndarray) -> np.ndarray:
    """True where a given clue (non-zero) differs from the solution."""
    return np.any((puzzles != 0) & (puzzles != solutions), axis=1)


# ----------------------------------------------------------------------------------------------
# Reading the original CSVs

def read_sudoku_csv(path: str, min_difficulty: Optional[int], subsample_size: Optional[int],
                    rng: Optional[np.random.Generator]) -> Tuple[np.ndarray, np.ndarray, int]:
    """Return ``(puzzles, solutions, n)`` as ``[N, n*n]`` uint8 digits (0 = blank) for the selected rows.

    Rows are filtered by ``rating >= min_difficulty`` and then subsampled (train only), as the
    original does. Structure is checked on every row; contents on the rows that are used.
    """
    table = PuzzleCSV(path)
    if len(table) == 0:
        raise DatasetError(f"{path}: no puzzles after the header line")
    table.check_nonempty("question", "answer")
    cells = int(table.lengths("question")[0])
    n = math.isqrt(cells)
    if n * n != cells or n not in SUDOKU_BOXES:
        raise DatasetError(f"{path}: line {table.line_numbers[0]}: question has {cells} characters; expected "
                           f"n*n for a grid size n in {sorted(SUDOKU_BOXES)}")
    table.check_width("question", cells)
    table.check_width("answer", cells)

    rows = np.arange(len(table))
    if min_difficulty is not None:
        rows = rows[table.ratings() >= min_difficulty]
        if rows.size == 0:
            raise DatasetError(f"{path}: no puzzle has rating >= --min-difficulty {min_difficulty}")
    if rng is not None:
        rows = rows[subsample_rows(rows.size, subsample_size, rng)]

    q = table.fixed_width("question", rows, cells)
    a = table.fixed_width("answer", rows, cells)
    # '.' (and '0') are blanks; '1'..'n' digits.
    q_digits = np.where(q == ord("."), 0, q.astype(np.int16) - ord("0"))
    a_digits = a.astype(np.int16) - ord("0")
    checks = [
        (np.any((q_digits < 0) | (q_digits > n), axis=1), f"question has a character outside '.' and 1..{n}"),
        (np.any((a_digits < 1) | (a_digits > n), axis=1), f"answer has a character outside 1..{n}"),
    ]
    for bad, what in checks:
        if bad.any():
            raise DatasetError(f"{path}: line {table.line_numbers[rows[np.argmax(bad)]]}: {what}")
    q_digits, a_digits = q_digits.astype(np.uint8), a_digits.astype(np.uint8)
    for bad, what in [(inconsistent_with_clues(q_digits, a_digits), "answer contradicts a clue of the question"),
                      (invalid_solutions(a_digits, n), "answer is not a valid Sudoku solution")]:
        if bad.any():
            raise DatasetError(f"{path}: line {table.line_numbers[rows[np.argmax(bad)]]}: {what}")
    return q_digits, a_digits, n


# ----------------------------------------------------------------------------------------------
# Augmentation

def shuffle_sudoku(puzzles: np.ndarray, solutions: np.ndarray, n: int, rng: np.random.Generator
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """One random validity-preserving shuffle per row of ``[K, n*n]`` puzzles and solutions.

    As the original ``shuffle_sudoku``: relabel digits 1..n (blank fixed), optionally transpose
    (only when boxes are square), permute the bands and the rows inside each band, and the
    stacks and the columns inside each stack.
    """
    br, bc = box_shape(n)
    k = puzzles.shape[0]
    digit_map = np.zeros((k, n + 1), dtype=np.uint8)
    digit_map[:, 1:] = rng.permuted(np.broadcast_to(np.arange(1, n + 1, dtype=np.uint8), (k, n)), axis=1)
    transpose = (rng.random(k) < 0.5) if br == bc else np.zeros(k, dtype=bool)

    def line_permutation(block: int) -> np.ndarray:
        # Order of the n//block bands (or stacks), then the order of lines inside each.
        bands = rng.permuted(np.broadcast_to(np.arange(n // block), (k, n // block)), axis=1)
        inner = rng.permuted(np.broadcast_to(np.arange(block), (k, n // block, block)), axis=2)
        return (bands[:, :, None] * block + inner).reshape(k, n)

    rows, cols = line_permutation(br).astype(np.int32), line_permutation(bc).astype(np.int32)
    # New cell (i, j) comes from old flat index rows[i]*n + cols[j], or cols[j]*n + rows[i] after a
    # transpose: in both cases row_part[i] + col_part[j], one broadcast add. The offset of each
    # copy's row in the stacked input is folded in, so a single flat gather (np.take) does it all.
    row_weight = np.where(transpose, 1, n).astype(np.int32)[:, None]
    row_part = rows * row_weight + (np.arange(k, dtype=np.int32) * (n * n))[:, None]
    col_part = cols * (n + 1 - row_weight)  # the other weight: n when rows weigh 1, else 1
    flat_source = (row_part[:, :, None] + col_part[:, None, :]).ravel()
    map_offset = (np.arange(k) * (n + 1))[:, None]

    def apply(x: np.ndarray) -> np.ndarray:
        moved = np.take(np.ascontiguousarray(x).ravel(), flat_source).reshape(k, n * n)
        return np.take(digit_map.ravel(), moved + map_offset)

    return apply(puzzles), apply(solutions)


def augment_set(puzzles: np.ndarray, solutions: np.ndarray, n: int, num_aug: int, rng: np.random.Generator,
                desc: str = "augment") -> Tuple[np.ndarray, np.ndarray]:
    """Each puzzle followed by ``num_aug`` shuffled copies: ``[N * (1 + num_aug), n*n]``."""
    num, cells = puzzles.shape[0], n * n
    out_q = np.empty((num, 1 + num_aug, cells), dtype=np.uint8)
    out_a = np.empty_like(out_q)
    out_q[:, 0], out_a[:, 0] = puzzles, solutions  # copy 0 of every group is the original
    if num_aug > 0:
        per_chunk = max(1, _AUG_CHUNK // num_aug)  # source puzzles per vectorised step
        with progress_bar(total=num * num_aug, desc=desc, unit="puzzle", unit_scale=True, leave=False) as bar:
            for start in range(0, num, per_chunk):
                src = np.repeat(np.arange(start, min(num, start + per_chunk)), num_aug)
                q, a = shuffle_sudoku(puzzles[src], solutions[src], n, rng)
                out_q[start: start + per_chunk, 1:] = q.reshape(-1, num_aug, cells)
                out_a[start: start + per_chunk, 1:] = a.reshape(-1, num_aug, cells)
                bar.update(src.size)
    return out_q.reshape(-1, cells), out_a.reshape(-1, cells)


# ----------------------------------------------------------------------------------------------
# Exact solver and generator

class SudokuSolver:
    """Exact solver for n x n Sudoku (n in SUDOKU_BOXES) by bitmask constraint propagation.

    Propagation removes placed digits from peers (naked singles) and places digits that have
    one possible cell in a unit (hidden singles); when stuck, the search branches on the cell
    with the fewest candidates. ``guesses`` counts branch choices tried and is the difficulty
    rating of generated puzzles (0 = solvable by the two single rules alone).
    """

    def __init__(self, n: int):
        self.n = n
        self.full = (1 << n) - 1
        self.units = [list(map(int, u)) for u in sudoku_units(n)]
        peers = [set() for _ in range(n * n)]
        for unit in self.units:
            for c in unit:
                peers[c].update(unit)
        self.peers = [sorted(p - {c}) for c, p in enumerate(peers)]
        self.guesses = 0

    def _propagate(self, cands: List[int], queue: List[int]) -> bool:
        """Apply both single rules until nothing changes; False on a contradiction."""
        peers, units, full = self.peers, self.units, self.full
        while True:
            while queue:
                c = queue.pop()
                bit = cands[c]
                for p in peers[c]:
                    m = cands[p]
                    if m & bit:
                        m ^= bit
                        if not m:
                            return False
                        cands[p] = m
                        if not m & (m - 1):
                            queue.append(p)
            for unit in units:
                once = twice = 0
                for c in unit:
                    m = cands[c]
                    twice |= once & m
                    once |= m
                if once != full:
                    return False  # some digit has no place left in this unit
                only_here = once & ~twice
                if only_here:
                    for c in unit:
                        m = cands[c] & only_here
                        if m and cands[c] != m:
                            if m & (m - 1):
                                return False  # two digits need this same cell
                            cands[c] = m
                            queue.append(c)
            if not queue:
                return True

    def _search(self, cands: List[int], limit: int, found: List[List[int]], rng: Optional[np.random.Generator]) -> None:
        best, best_count = -1, self.n + 1
        for c, m in enumerate(cands):
            if m & (m - 1):
                k = m.bit_count()
                if k < best_count:
                    best, best_count = c, k
                    if k == 2:
                        break
        if best < 0:
            found.append([m.bit_length() for m in cands])
            return
        m = cands[best]
        bits = [1 << i for i in range(self.n) if m >> i & 1]
        if rng is not None:
            bits = [bits[i] for i in rng.permutation(len(bits))]
        for bit in bits:
            self.guesses += 1
            trial = cands.copy()
            trial[best] = bit
            if self._propagate(trial, [best]):
                self._search(trial, limit, found, rng)
                if len(found) >= limit:
                    return

    def solve(self, grid: Sequence[int], limit: int = 2, rng: Optional[np.random.Generator] = None,
              exclude: Optional[Tuple[int, int]] = None) -> List[List[int]]:
        """Up to ``limit`` solutions of ``grid`` (flat, 0 = blank); ``self.guesses`` holds the effort.

        ``exclude=(cell, digit)`` forbids one digit in one blank cell (used to test uniqueness
        after removing a clue: the puzzle stays unique iff no solution avoids the old digit).
        ``rng`` randomises the branch order (used to draw random full grids).
        """
        self.guesses = 0
        cands = [self.full] * (self.n * self.n)
        queue = []
        for c, v in enumerate(grid):
            if v:
                cands[c] = 1 << (int(v) - 1)
                queue.append(c)
        if exclude is not None:
            cands[exclude[0]] &= ~(1 << (exclude[1] - 1))
        found: List[List[int]] = []
        if self._propagate(cands, queue):
            self._search(cands, limit, found, rng)
        return found


def generate_sudoku(count: int, n: int, rng: np.random.Generator, desc: str = "generate"
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` distinct minimal puzzles with exactly one solution: ``(puzzles, solutions, ratings)``.

    A random full grid (the solver with random branch order) has its clues removed in random
    order, each removal kept only if the solution stays unique. The rating is the number of
    guesses the solver needs to find the solution and prove it unique.
    """
    solver = SudokuSolver(n)
    cells = n * n
    puzzles, solutions, ratings, seen = [], [], [], set()
    attempts = 0
    with progress_bar(total=count, desc=desc, unit="puzzle", leave=False) as bar:
        while len(puzzles) < count:
            attempts += 1
            if attempts > GENERATE_ATTEMPTS_PER_PUZZLE * count + GENERATE_EXTRA_ATTEMPTS:
                raise DatasetError(f"could only generate {len(puzzles)} distinct {n}x{n} puzzles; ask for fewer")
            solution = solver.solve([0] * cells, limit=1, rng=rng)[0]
            puzzle = list(solution)
            for c in rng.permutation(cells):
                digit, puzzle[c] = puzzle[c], 0
                if solver.solve(puzzle, limit=1, exclude=(int(c), digit)):
                    puzzle[c] = digit  # another solution would appear: keep the clue
            key = bytes(puzzle)
            if key in seen:
                continue
            seen.add(key)
            solver.solve(puzzle, limit=2)
            puzzles.append(puzzle)
            solutions.append(solution)
            ratings.append(solver.guesses)
            bar.update(1)
    return (np.array(puzzles, dtype=np.uint8), np.array(solutions, dtype=np.uint8), np.array(ratings, dtype=np.int64))


# ----------------------------------------------------------------------------------------------
# Dataset writing

def write_split(output_dir: str, split: str, puzzles: np.ndarray, solutions: np.ndarray, n: int, num_aug: int,
                rng: np.random.Generator) -> None:
    """Write one split: every source puzzle (with its augmented copies) is one group."""
    inputs, labels = augment_set(puzzles, solutions, n, num_aug, rng, desc=f"{split} augment")
    # blank 0 -> 1, digit d -> d + 1; 0 stays free for PAD
    save_split(os.path.join(output_dir, split), inputs + 1, labels + 1, group_size=1 + num_aug,
               vocab_size=n + 2, task="sudoku")


def build_sudoku_dataset(config: SudokuBuildConfig) -> None:
    """Build ``config.output_dir`` (written to a temporary folder, moved into place when complete)."""
    local = config.generate is None and os.path.isdir(config.source_repo)
    check_output_dir(config.output_dir, [("--source-repo", config.source_repo)] if local else [])
    rng = np.random.default_rng(config.seed)
    if config.generate is not None:
        n = config.grid
        num_test = config.generate_test if config.generate_test is not None else max(1, config.generate // 10)
        q, a, rating = generate_sudoku(config.generate + num_test, n, rng, desc=f"generate {n}x{n}")
        print(f"generated {q.shape[0]} {n}x{n} puzzles; rating (solver guesses) "
              f"min {rating.min()}, median {int(np.median(rating))}, max {rating.max()}")
        if n == 9:  # Sudoku-Extreme was selected for hardness; random minimal puzzles mostly need no guess
            print(f"note: {np.mean(rating == 0):.0%} of these need no guess: generated 9x9 Sudoku is easy and no stand-in for "
                  "Sudoku-Extreme; --min-difficulty K keeps the puzzles needing at least K guesses")
        sources = {"train": (q[:config.generate], a[:config.generate], rating[:config.generate]),
                   "test": (q[config.generate:], a[config.generate:], rating[config.generate:])}
        splits = {}
        for split, (sq, sa, sr) in sources.items():
            keep = np.arange(sq.shape[0]) if config.min_difficulty is None else np.flatnonzero(sr >= config.min_difficulty)
            if split == "train":
                keep = keep[subsample_rows(keep.size, config.subsample_size, rng)]
            if config.min_difficulty is not None:
                print(f"{split}: {keep.size} of {sq.shape[0]} puzzles kept with rating >= --min-difficulty {config.min_difficulty}")
                if not keep.size:
                    raise DatasetError(f"--min-difficulty {config.min_difficulty}: no generated {split} puzzle needs that many "
                                       f"guesses (max {sr.max() if sr.size else 0}); generate more or lower it")
            splits[split] = (sq[keep], sa[keep])
    else:
        splits, n = {}, None
        for split in ("train", "test"):
            path = resolve_source_csv(config.source_repo, split)
            t0 = time.perf_counter()
            sq, sa, split_n = read_sudoku_csv(path, config.min_difficulty,
                                              config.subsample_size if split == "train" else None,
                                              rng if split == "train" else None)
            if n is not None and split_n != n:
                raise DatasetError(f"{path}: {split_n}x{split_n} grids, but train.csv holds {n}x{n}")
            n = split_n
            splits[split] = (sq, sa)
            print(f"{split}: read {sq.shape[0]} puzzles from {path} in {time.perf_counter() - t0:.1f}s")

    copies = {"train": 1 + config.num_aug, "test": 1}
    # inputs and labels (one byte per cell) and three int32 index entries per example
    needed = sum(sq.shape[0] * copies[split] * (2 * n * n + 12) for split, (sq, _) in splits.items())
    with atomic_output_dir(config.output_dir, needed_bytes=needed) as tmp:
        for split, (sq, sa) in splits.items():
            t0 = time.perf_counter()
            write_split(tmp, split, sq, sa, n, copies[split] - 1, rng)
            print(f"{split}: {sq.shape[0]} puzzles x {copies[split]} copies written in {time.perf_counter() - t0:.1f}s")
        save_identifiers(tmp, ["<blank>"])
    print(f"wrote {config.output_dir}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Build the dataset the command line asks for (one option per field of :class:`SudokuBuildConfig`)."""
    build_sudoku_dataset(parse_config(SudokuBuildConfig, argv, description=__doc__))


if __name__ == "__main__":
    run_cli(main)
