"""Sudoku of any size n x n (4, 6, 8, 9): n*n characters row by row, ``.`` or ``0`` for a blank.

Whitespace and the inspector's box lines (``|``, ``+``, ``-``) are ignored, so both
``53..7....6..195...`` and ``scripts/inspect_sudoku_dataset.py``'s printed grid read. A file
holds one puzzle per line; ``<puzzle>,<solution>`` (the builders' CSV order) gives the truth.
Tokens as the builder writes them: PAD 0, blank 1, digit d -> d + 1. Answers: n*n digits, the
clues kept as given (``raw_answer``: the model's output, which may overwrite a clue).
"""
from __future__ import annotations

import math
import re
from typing import Optional

import numpy as np

from dataset.sudoku import SUDOKU_BOXES, box_shape, first_problem, sudoku_units
from dataset.common import DatasetError
from tasks.base import Cells, Puzzle, PuzzleError, TaskCodec, register
from tasks.views import CellViews, random_permutations, random_words, row_keys

_DECORATION = re.compile(r"[\s|+\-]")
CLUE_FILL, BLANK_FILL = (226, 229, 236), (255, 255, 255)
CLUE_TEXT, ANSWER_TEXT, WRONG_TEXT = (20, 24, 33), (36, 86, 201), (179, 38, 30)


@register
class SudokuCodec(TaskCodec):
    name = "sudoku"
    checks_answers = True
    keeps_clues = True

    def _digits(self, text: str, what: str) -> np.ndarray:
        cells = _DECORATION.sub("", text)
        if not cells:
            raise PuzzleError(f"empty {what}")
        n = math.isqrt(self.seq_len if self.seq_len is not None else len(cells))
        if self.seq_len is None and (n * n != len(cells) or n not in SUDOKU_BOXES):
            raise PuzzleError(f"{what} has {len(cells)} cells: not a square Sudoku grid "
                              f"(n*n cells for n in {', '.join(map(str, sorted(SUDOKU_BOXES)))})")
        wrong_size = self.seq_len is not None and len(cells) != self.seq_len
        size_error = f"{what} has {len(cells)} cells; this checkpoint's {n}x{n} Sudoku needs {self.seq_len}"
        if wrong_size and all(ch == "." or "0" <= ch <= "9" for ch in cells):
            raise PuzzleError(size_error)  # a Sudoku of another size: its 9s are no fault of their own
        # Otherwise characters before the length: a puzzle of another task (a maze, a domino line) is named as such.
        for i, ch in enumerate(cells):
            if ch != "." and (not "0" <= ch <= "9" or int(ch) > n):
                raise PuzzleError(f"{what}: character {ch!r} at cell {i + 1} is not a digit 1..{n} or a blank ('.' or '0')")
        if wrong_size:
            raise PuzzleError(size_error)
        return np.array([0 if ch == "." else int(ch) for ch in cells], dtype=np.int64)

    def parse(self, text: str, name: str = "") -> Puzzle:
        puzzle_text, _, solution_text = text.partition(",")
        puzzle = self._digits(puzzle_text, "puzzle")
        n = math.isqrt(puzzle.size)
        conflict = clue_conflict(puzzle, n)
        if conflict:
            raise PuzzleError(f"the clues conflict: {conflict}")
        truth = None
        if solution_text.strip():
            truth = self._digits(solution_text, "solution")
            if truth.size != puzzle.size:
                raise PuzzleError(f"solution has {truth.size} cells, the puzzle {puzzle.size}")
            problem = first_problem(puzzle, truth, n)
            if problem:
                raise PuzzleError(f"the given solution is wrong: {problem}")
        return Puzzle(data=puzzle, truth=truth)

    @classmethod
    def standalone_seq_len(cls, vocab_size: int) -> Optional[int]:
        n = vocab_size - 2  # digits 1..n, blank, PAD: the grid follows from the vocabulary (81 cells for 9x9)
        return n * n if n in SUDOKU_BOXES else None

    def check_shapes(self, seq_len: int, vocab_size: int) -> Optional[str]:
        n = math.isqrt(seq_len)
        if n * n != seq_len or n not in SUDOKU_BOXES or vocab_size != n + 2:
            return f"a Sudoku model has seq_len n*n and vocab n+2 (n in 4, 6, 8, 9), this one {seq_len} and {vocab_size}"
        return None

    def encode(self, data: np.ndarray) -> np.ndarray:
        return (data + 1).astype(np.int32)

    def encode_answer(self, truth: np.ndarray) -> np.ndarray:
        return (truth + 1).astype(np.int32)

    def format_tokens(self, tokens: np.ndarray) -> str:
        return "".join("." if t == 1 else str(int(t) - 1) for t in tokens)

    def answer(self, puzzle: Puzzle, tokens: np.ndarray) -> str:
        # Tokens outside the digits (PAD, blank) are shown as '.', i.e. not an answer for that cell.
        n = math.isqrt(len(tokens))
        return "".join(str(int(t) - 1) if 2 <= t <= n + 1 else "." for t in tokens)

    def keep_clues(self, puzzle: Puzzle, tokens: np.ndarray) -> np.ndarray:
        """The clues' digits where the puzzle gives them, the model's tokens elsewhere."""
        return np.where(puzzle.data != 0, self.encode(puzzle.data), tokens).astype(np.asarray(tokens).dtype)

    def problem(self, puzzle: Puzzle, tokens: np.ndarray) -> Optional[str]:
        n = math.isqrt(puzzle.data.size)
        return first_problem(puzzle.data, np.asarray(tokens, dtype=np.int64) - 1, n)

    def cells(self, puzzle: Puzzle, tokens: np.ndarray, is_input: bool) -> Cells:
        n = math.isqrt(puzzle.data.size)
        clue = (puzzle.data != 0).reshape(n, n)
        digits = np.asarray(tokens, dtype=np.int64).reshape(n, n) - 1
        colours = np.where(clue[..., None], CLUE_FILL, BLANK_FILL).astype(np.uint8)
        text = [[(str(d) if 1 <= d <= n else "") for d in row] for row in digits]
        ink = np.where(clue[..., None], CLUE_TEXT, ANSWER_TEXT).astype(np.uint8)
        if not is_input:
            # A filled digit that overwrote a clue is drawn in red.
            ink[clue & (digits != puzzle.data.reshape(n, n))] = WRONG_TEXT
        return Cells(colours=colours, text=text, text_colours=ink, boxes=box_shape(n))

    def views(self, inputs: np.ndarray, num_views: int, seed: int = 0,
              identifiers: Optional[np.ndarray] = None) -> CellViews:
        """Sudoku's symmetries, as the builder's augmentation draws them (``shuffle_sudoku``)."""
        inputs = np.asarray(inputs)
        return sudoku_views(inputs.shape[0], math.isqrt(inputs.shape[1]), num_views, row_keys(inputs, seed))


def sudoku_views(batch: int, n: int, num_views: int, keys: np.ndarray) -> CellViews:
    """Random symmetries of n x n Sudoku: relabel the digits, transpose (square boxes only), order
    the bands and the rows inside each band, the stacks and the columns inside each stack.

    Every one maps a valid solution to a valid solution and keeps clues on their solution's
    digits. ``keys`` ``[batch]`` (``row_keys``) fix the draws; view 0 is the identity.
    """
    br, bc = box_shape(n)
    bands, stacks = n // br, n // bc
    widths = [n, 1, bands, n, stacks, n]  # digits, transpose, band order, rows in bands, stack order, columns in stacks
    words = np.split(random_words(keys, num_views, sum(widths)), np.cumsum(widths)[:-1], axis=2)
    digits = random_permutations(words[0])  # digit d + 1 is shown as digits[d] + 1
    transpose = (words[1][..., 0] & np.uint64(1)).astype(bool) & (br == bc)

    def lines(order: np.ndarray, inner: np.ndarray, block: int, blocks: int) -> np.ndarray:
        inside = random_permutations(inner.reshape(batch, num_views, blocks, block))
        return (random_permutations(order)[..., None] * block + inside).reshape(batch, num_views, n)

    rows, cols = lines(words[2], words[3], br, bands), lines(words[4], words[5], bc, stacks)
    rows[:, 0], cols[:, 0], digits[:, 0], transpose[:, 0] = np.arange(n), np.arange(n), np.arange(n), False
    # View cell (i, j) shows cell (rows[i], cols[j]) of the row, or (cols[j], rows[i]) after a transpose.
    by_row = rows[..., :, None] * n + cols[..., None, :]
    by_col = cols[..., None, :] * n + rows[..., :, None]
    positions = np.where(transpose[..., None, None], by_col, by_row).reshape(batch, num_views, n * n)
    tokens = np.concatenate([np.broadcast_to(np.arange(2), (batch, num_views, 2)), digits + 2], axis=2)  # PAD, blank fixed
    return CellViews(positions=positions, tokens=tokens)


def clue_conflict(puzzle: np.ndarray, n: int) -> Optional[str]:
    """Where two clues of ``puzzle`` (digits, 0 blank) repeat a digit in a row, column or box, or None."""
    try:
        units = sudoku_units(n)
    except DatasetError as e:
        raise PuzzleError(str(e)) from None
    kinds = ["row", "column", "box"]
    for u, unit in enumerate(units):
        values = puzzle[unit]
        values = values[values != 0]
        seen, counts = np.unique(values, return_counts=True)
        if (counts > 1).any():
            return f"digit {int(seen[np.argmax(counts > 1)])} twice in {kinds[u // n]} {u % n + 1}"
    return None
