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
from typing import Literal, Optional, Sequence, Tuple

import numpy as np
import pydantic

from dataset.common import (DatasetError, PuzzleCSV, atomic_output_dir, check_output_dir, parse_config,
                            resolve_source_csv, run_cli, save_identifiers, save_split, subsample_rows)
from dataset.sudoku import (ROW_CHUNK, SUDOKU_BOXES, generate_sudoku, inconsistent_with_clues, invalid_solutions,
                            shuffle_sudoku)
from utils.progress import progress_bar


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

def augment_set(puzzles: np.ndarray, solutions: np.ndarray, n: int, num_aug: int, rng: np.random.Generator,
                desc: str = "augment") -> Tuple[np.ndarray, np.ndarray]:
    """Each puzzle followed by ``num_aug`` shuffled copies: ``[N * (1 + num_aug), n*n]``."""
    num, cells = puzzles.shape[0], n * n
    out_q = np.empty((num, 1 + num_aug, cells), dtype=np.uint8)
    out_a = np.empty_like(out_q)
    out_q[:, 0], out_a[:, 0] = puzzles, solutions  # copy 0 of every group is the original
    if num_aug > 0:
        per_chunk = max(1, ROW_CHUNK // num_aug)  # source puzzles per vectorised step
        with progress_bar(total=num * num_aug, desc=desc, unit="puzzle", unit_scale=True, leave=False) as bar:
            for start in range(0, num, per_chunk):
                src = np.repeat(np.arange(start, min(num, start + per_chunk)), num_aug)
                q, a = shuffle_sudoku(puzzles[src], solutions[src], n, rng)
                out_q[start: start + per_chunk, 1:] = q.reshape(-1, num_aug, cells)
                out_a[start: start + per_chunk, 1:] = a.reshape(-1, num_aug, cells)
                bar.update(src.size)
    return out_q.reshape(-1, cells), out_a.reshape(-1, cells)


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
