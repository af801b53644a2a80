"""Print Sudoku puzzles and solutions of a built dataset, and check every solution.

    python scripts/inspect_sudoku_dataset.py --data-path data/sudoku-extreme-1k-aug-1000 --split train --num 3

Works for any n x n Sudoku (boxes: the most square split of n, e.g. 6 -> 2x3). Every example of
the split is checked: the solution must be a valid Sudoku and agree with the puzzle's clues.
The first invalid example is named and the exit status is 2.
"""
from __future__ import annotations

import math
import os
from typing import List, Optional, Sequence

import numpy as np

from dataset.sudoku import box_shape, first_problem, sudoku_units
from dataset.common import DatasetError, load_metadata, run_cli
from utils.cli import ArgumentParser

_CHUNK = 1 << 16  # examples checked per vectorised step


def format_grid(digits: np.ndarray, n: int) -> str:
    """An n x n grid of digits (0 = blank, shown as '.') with box separators."""
    box_rows, box_cols = box_shape(n)
    width = len(str(n))
    lines: List[str] = []
    for r in range(n):
        if r and r % box_rows == 0:
            lines.append("+".join(["-" * (box_cols * (width + 1) + 1)] * (n // box_cols))[1:])
        cells = [(str(d) if d else ".").rjust(width) for d in digits[r * n:(r + 1) * n]]
        lines.append(" | ".join(" ".join(cells[c:c + box_cols]) for c in range(0, n, box_cols)))
    return "\n".join(lines)


def inspect(data_path: str, split: str, num: int) -> int:
    """Print ``num`` examples and check all of them; returns the number of examples checked."""
    split_dir = os.path.join(data_path, split)
    meta = load_metadata(split_dir)
    n = math.isqrt(meta.seq_len)
    if n * n != meta.seq_len:
        raise DatasetError(f"{os.path.join(split_dir, 'dataset.json')}: seq_len {meta.seq_len} is not a square grid")
    box_shape(n)
    checked = 0
    for set_name in meta.sets:
        inputs_path = os.path.join(split_dir, f"{set_name}__inputs.npy")
        labels_path = os.path.join(split_dir, f"{set_name}__labels.npy")
        for path in (inputs_path, labels_path):
            if not os.path.isfile(path):
                raise DatasetError(f"{path}: missing")
        inputs = np.load(inputs_path, mmap_mode="r")
        labels = np.load(labels_path, mmap_mode="r")
        if inputs.shape != labels.shape or inputs.ndim != 2 or inputs.shape[1] != meta.seq_len:
            raise DatasetError(f"{labels_path}: shape {labels.shape} does not match inputs {inputs.shape} "
                               f"and seq_len {meta.seq_len}")
        # Tokens: PAD 0, blank 1, digit d -> d + 1.
        for i in range(min(num, len(inputs))):
            print(f"[{split}/{set_name}] example {i}: puzzle")
            print(format_grid(inputs[i].astype(np.int64) - 1, n))
            print("solution")
            print(format_grid(labels[i].astype(np.int64) - 1, n))
            print()
        # Vectorised screen of every example (in chunks: a split can hold millions); the
        # detailed message is worked out only for the first bad one.
        units = sudoku_units(n)
        for start in range(0, len(inputs), _CHUNK):
            puzzles = inputs[start:start + _CHUNK].astype(np.int64) - 1
            solutions = labels[start:start + _CHUNK].astype(np.int64) - 1
            bad = (np.any((solutions < 1) | (solutions > n) | (puzzles < 0) | (puzzles > n), axis=1)
                   | np.any((puzzles != 0) & (puzzles != solutions), axis=1)
                   | np.any(np.sort(solutions[:, units], axis=-1) != np.arange(1, n + 1), axis=(1, 2)))
            if bad.any():
                i = int(np.argmax(bad))
                raise DatasetError(f"{labels_path}: example {start + i}: {first_problem(puzzles[i], solutions[i], n)}")
        checked += len(inputs)
    print(f"checked {checked} examples of {split}: every solution is a valid {n}x{n} Sudoku matching its clues")
    return checked


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = ArgumentParser(description="Print and check Sudoku examples of a built dataset.")
    p.add_argument("--data-path", "--data_path", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--num", type=int, default=3, help="examples to print")
    args = p.parse_args(argv)
    inspect(args.data_path, args.split, args.num)


if __name__ == "__main__":
    run_cli(main)
