"""Mazes: rows of text in the original charset, ``#`` wall, space open, ``S`` start, ``G`` goal.

Answers mark the shortest path's cells (endpoints excluded) with ``o``, as the builder's labels,
on the maze as given (``raw_answer``: the model's output, which may also change walls, S or G);
a puzzle that already holds ``o`` cells is taken as solved: its path is the truth and the model
sees it without them. Puzzles in a file are separated by a blank line. Tokens: ``"# SGo"`` ->
1..5, PAD 0 (``dataset/maze.py``'s ``CHAR_TO_TOKEN``).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np

from dataset.maze import CHAR_TO_TOKEN, CHARSET, bfs
from tasks.base import Cells, Puzzle, PuzzleError, TaskCodec, register
from tasks.views import CellViews, dihedral_positions, distinct_choices, identity_cells, row_keys

WALL_T, OPEN_T, START_T, GOAL_T, PATH_T = range(1, 6)
FILLS = {0: (236, 238, 242), WALL_T: (47, 53, 66), OPEN_T: (255, 255, 255), START_T: (30, 158, 85),
         GOAL_T: (214, 48, 49), PATH_T: (247, 201, 72)}


@register
class MazeCodec(TaskCodec):
    name = "maze"
    checks_answers = True
    keeps_clues = True

    def split_text(self, text: str) -> List[Tuple[int, str]]:
        chunks, start, rows = [], 0, []
        for i, line in enumerate(text.splitlines() + [""]):
            if line.strip():
                if not rows:
                    start = i + 1
                rows.append(line)
            elif rows:
                chunks.append((start, "\n".join(rows)))
                rows = []
        return chunks

    def parse(self, text: str, name: str = "") -> Puzzle:
        rows = [r.rstrip("\r\n") for r in text.strip("\n").split("\n")]
        rows = [r for r in rows if r.strip()]
        if not rows:
            raise PuzzleError("empty maze")
        widths = {len(r) for r in rows}
        if len(widths) > 1:
            bad = next(i for i, r in enumerate(rows) if len(r) != len(rows[0]))
            raise PuzzleError(f"ragged rows: row 1 has {len(rows[0])} characters, row {bad + 1} has {len(rows[bad])}")
        for r, row in enumerate(rows):
            for c, ch in enumerate(row):
                if ch not in CHARSET:
                    raise PuzzleError(f"character {ch!r} at row {r + 1}, column {c + 1} is not in the maze charset "
                                      "('#' wall, ' ' open, 'S' start, 'G' goal, 'o' path)")
        h, w = len(rows), len(rows[0])
        if self.seq_len is not None and h * w != self.seq_len:
            side = math.isqrt(self.seq_len)
            raise PuzzleError(f"maze is {h}x{w}; this checkpoint's mazes are {side}x{side}")
        if h != w:
            raise PuzzleError(f"maze is {h}x{w}; mazes are square")
        grid = CHAR_TO_TOKEN[np.frombuffer("".join(rows).encode(), dtype=np.uint8)].astype(np.int32)
        for token, what in ((START_T, "start 'S'"), (GOAL_T, "goal 'G'")):
            count = int(np.count_nonzero(grid == token))
            if count != 1:
                raise PuzzleError(f"a maze needs exactly one {what}, found {count}")
        truth = None
        if (grid == PATH_T).any():
            truth = grid.copy()
            grid = np.where(grid == PATH_T, OPEN_T, grid).astype(np.int32)
            problem = path_problem(grid, truth)
            if problem:
                raise PuzzleError(f"the path marked with 'o' is not a shortest path: {problem}")
        return Puzzle(data=grid, truth=truth)

    @classmethod
    def standalone_seq_len(cls, vocab_size: int) -> Optional[int]:
        return 30 * 30  # the released maze models (maze-30x30-hard); other sizes: seq_len=

    def check_shapes(self, seq_len: int, vocab_size: int) -> Optional[str]:
        if math.isqrt(seq_len) ** 2 != seq_len or vocab_size != len(CHARSET) + 1:
            return f"a maze model has seq_len n*n and vocab {len(CHARSET) + 1}, this one {seq_len} and {vocab_size}"
        return None

    def encode(self, data: np.ndarray) -> np.ndarray:
        return data.astype(np.int32)

    def encode_answer(self, truth: np.ndarray) -> np.ndarray:
        return truth.astype(np.int32)

    def format_tokens(self, tokens: np.ndarray) -> str:
        n = math.isqrt(len(tokens))
        chars = np.array(list("?" + CHARSET))[np.clip(np.asarray(tokens), 0, len(CHARSET))]
        return "\n".join("".join(chars[r * n:(r + 1) * n]) for r in range(n))

    def answer(self, puzzle: Puzzle, tokens: np.ndarray) -> str:
        return self.format_tokens(tokens)

    def keep_clues(self, puzzle: Puzzle, tokens: np.ndarray) -> np.ndarray:
        """The maze's walls, start and goal as given; an open cell is a path cell where the model
        marked one, else open."""
        tokens = np.asarray(tokens)
        open_cell = np.where(tokens == PATH_T, PATH_T, OPEN_T)
        return np.where(puzzle.data == OPEN_T, open_cell, puzzle.data).astype(tokens.dtype)

    def problem(self, puzzle: Puzzle, tokens: np.ndarray) -> Optional[str]:
        return path_problem(puzzle.data, np.asarray(tokens))

    def cells(self, puzzle: Puzzle, tokens: np.ndarray, is_input: bool) -> Cells:
        n = math.isqrt(len(tokens))
        t = np.clip(np.asarray(tokens), 0, PATH_T).reshape(n, n)
        palette = np.array([FILLS[k] for k in range(6)], dtype=np.uint8)
        text = [["S" if v == START_T else "G" if v == GOAL_T else "" for v in row] for row in t]
        return Cells(colours=palette[t], text=text, text_colours=np.full((n, n, 3), 255, dtype=np.uint8))

    def views(self, inputs: np.ndarray, num_views: int, seed: int = 0,
              identifiers: Optional[np.ndarray] = None) -> CellViews:
        """The 8 symmetries of the square (the builder's ``--aug``): views 1..7 the other seven in a
        random order per maze, then again from the identity when more views are asked."""
        inputs = np.asarray(inputs)
        batch, seq_len = inputs.shape
        dihedral = distinct_choices(row_keys(inputs, seed), num_views, 8)
        views = identity_cells(batch, num_views, seq_len, len(CHARSET) + 1)
        views.positions = dihedral_positions(math.isqrt(seq_len))[dihedral]
        return views


def path_problem(maze: np.ndarray, answer: np.ndarray) -> Optional[str]:
    """Why ``answer`` (tokens) is not ``maze`` (tokens, no path) with a shortest S-G path marked, or None.

    Independent of the model: the answer must keep every wall, S and G, put ``o`` only on open
    cells, and its ``o`` cells must be exactly as many as a shortest path needs and connect S to G.
    """
    n = math.isqrt(maze.size)
    if answer.shape != maze.shape:
        return f"answer has {answer.size} cells, the maze {maze.size}"
    changed = np.flatnonzero((answer != maze) & ~((maze == OPEN_T) & (answer == PATH_T)))
    if changed.size:
        r, c = divmod(int(changed[0]), n)
        return f"cell at row {r + 1}, column {c + 1} changed from {CHARSET[maze[changed[0]] - 1]!r} to " \
               f"{(CHARSET + '?')[min(max(int(answer[changed[0]]) - 1, -1), len(CHARSET))]!r}"
    grid = maze.reshape(1, n, n)
    start = np.argwhere(grid[0] == START_T)
    goal = tuple(np.argwhere(grid[0] == GOAL_T)[0])
    shortest = bfs(grid != WALL_T, start)[0][0][goal]
    if shortest < 0:
        return "G cannot be reached from S"
    path_cells = int(np.count_nonzero(answer == PATH_T))
    if path_cells != shortest - 1:
        return f"{path_cells} path cells marked; a shortest path has {shortest - 1}"
    on_path = (answer.reshape(1, n, n) == PATH_T) | (grid == START_T) | (grid == GOAL_T)
    if bfs(on_path, start)[0][0][goal] != shortest:
        return "the marked cells do not connect S to G"
    return None
