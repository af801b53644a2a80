"""Build a maze shortest-path dataset: from the original CSVs (local folder or Hugging Face) or generated.

    python dataset/build_maze_dataset.py --output-dir data/maze-30x30-hard-1k
    python dataset/build_maze_dataset.py --source-repo path/to/folder_with_train_and_test_csv --aug
    python dataset/build_maze_dataset.py --generate 1000 --size 30 --output-dir data/maze-30x30-gen

Cells use the original charset ``"# SGo"`` (wall, open, start, goal, path) mapped to tokens
1..5, PAD 0, vocabulary 6, ``seq_len = size * size``. The label is the input with the cells
of the shortest path from S to G (endpoints excluded) marked ``o``. With ``--aug`` every train
maze appears in its 8 dihedral forms, which together form one group.
"""
from __future__ import annotations

import math
import os
import time
from typing import Optional, Sequence, Tuple

import numpy as np
import pydantic

from dataset.common import (DatasetError, PuzzleCSV, atomic_output_dir, check_output_dir, dihedral_transform,
                            parse_config, resolve_source_csv, run_cli, save_identifiers, save_split, subsample_rows)
from utils.progress import progress_bar

CHARSET = "# SGo"
WALL, OPEN, START, GOAL, PATH = (ord(ch) for ch in CHARSET)

# Byte -> token (1..5); 0 marks a character outside the charset.
CHAR_TO_TOKEN = np.zeros(256, dtype=np.uint8)
CHAR_TO_TOKEN[[ord(ch) for ch in CHARSET]] = np.arange(1, len(CHARSET) + 1)

# Share of the eligible walls (those every route through which is longer than the S-G path)
# knocked down after carving a perfect maze: the loops make the solver compare routes instead of
# following the only one, while the S-G path stays the unique shortest.
LOOP_FRACTION = 0.08

# Smallest generated grid: a border, two rooms and the wall between them in each direction.
MIN_MAZE_SIZE = 5
# Mazes carved and checked together per numpy step of the generator (bounds its temporaries).
GENERATE_BATCH_MIN, GENERATE_BATCH_MAX = 16, 256


class MazeBuildConfig(pydantic.BaseModel):
    """Options of the builder; the first four are the original's."""

    source_repo: str = pydantic.Field("sapientinc/maze-30x30-hard-1k", description=(
        "Hugging Face dataset repo, or a local folder holding train.csv and test.csv"))
    output_dir: str = pydantic.Field("data/maze-30x30-hard-1k", description="dataset folder to write")
    subsample_size: Optional[int] = pydantic.Field(None, ge=0, description="keep this many train mazes")
    aug: bool = pydantic.Field(False, description="add the 8 dihedral forms of every train maze")
    seed: int = pydantic.Field(0, description="seed of subsampling and generation")
    generate: Optional[int] = pydantic.Field(None, ge=1, json_schema_extra={"metavar": "N"}, description=(
        "generate N train mazes offline"))
    generate_test: Optional[int] = pydantic.Field(None, ge=0, json_schema_extra={"metavar": "M"}, description=(
        "generated test mazes (default N // 10)"))
    size: int = pydantic.Field(30, ge=MIN_MAZE_SIZE, description="grid side for --generate")


# ----------------------------------------------------------------------------------------------
# Reading the original CSVs

def read_maze_csv(path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(questions, answers, line_numbers)``: ``[N, n*n]`` character codes, validated.

    Every row must be a square grid of the same size as the first, use only ``"# SGo"``, and
    its answer must equal the question except for path cells ``o`` placed on open cells.
    """
    table = PuzzleCSV(path)
    if len(table) == 0:
        raise DatasetError(f"{path}: no mazes after the header line")
    table.check_nonempty("question", "answer")
    cells = int(table.lengths("question")[0])
    n = math.isqrt(cells)
    if n * n != cells:
        raise DatasetError(f"{path}: line {table.line_numbers[0]}: question has {cells} characters, not a square grid")
    table.check_width("question", cells)
    table.check_width("answer", cells)
    rows = np.arange(len(table))
    q = table.fixed_width("question", rows, cells)
    a = table.fixed_width("answer", rows, cells)
    checks = [
        (np.any(CHAR_TO_TOKEN[q] == 0, axis=1) | np.any(CHAR_TO_TOKEN[a] == 0, axis=1),
         f"character outside the maze charset {CHARSET!r}"),
        (np.any((a != q) & ~((a == PATH) & (q == OPEN)), axis=1),
         "answer differs from the question outside path cells ('o' on open cells)"),
    ]
    for bad, what in checks:
        if bad.any():
            raise DatasetError(f"{path}: line {table.line_numbers[np.argmax(bad)]}: {what}")
    return q, a, table.line_numbers


# ----------------------------------------------------------------------------------------------
# Generator

def carve_maze(size: int, rng: np.random.Generator) -> np.ndarray:
    """A perfect maze (spanning tree of rooms at odd coordinates, randomised depth-first search).

    Returns a ``[size, size]`` bool array, True = open. Depth-first carving makes long winding
    corridors, hence long shortest paths. The walk is sequential by nature (each step depends on
    the cells visited so far), so it is a plain loop over rooms.
    """
    open_ = np.zeros((size, size), dtype=bool)
    rooms = (size - 1) // 2  # rooms per side, at coordinates 1, 3, ..., 2*rooms - 1
    visited = np.zeros((rooms, rooms), dtype=bool)
    start = (int(rng.integers(rooms)), int(rng.integers(rooms)))
    stack = [start]
    visited[start] = True
    open_[2 * start[0] + 1, 2 * start[1] + 1] = True
    steps = ((0, 1), (1, 0), (0, -1), (-1, 0))
    while stack:
        r, c = stack[-1]
        options = [(r + dr, c + dc) for dr, dc in steps
                   if 0 <= r + dr < rooms and 0 <= c + dc < rooms and not visited[r + dr, c + dc]]
        if not options:
            stack.pop()
            continue
        nr, nc = options[int(rng.integers(len(options)))]
        visited[nr, nc] = True
        open_[2 * nr + 1, 2 * nc + 1] = True
        open_[r + nr + 1, c + nc + 1] = True  # the wall between the two rooms
        stack.append((nr, nc))
    return open_


def _neighbour_sum(x: np.ndarray) -> np.ndarray:
    """Sum of the 4-neighbours of every cell of ``[B, H, W]`` (zero outside the grid)."""
    out = np.zeros_like(x)
    out[:, 1:] += x[:, :-1]
    out[:, :-1] += x[:, 1:]
    out[:, :, 1:] += x[:, :, :-1]
    out[:, :, :-1] += x[:, :, 1:]
    return out


def bfs(open_: np.ndarray, sources: np.ndarray, count_paths: bool = False) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Breadth-first search on a batch of grids at once, one numpy step per distance layer.

    ``open_`` is ``[B, H, W]`` bool, ``sources`` ``[B, 2]``. Returns ``dist`` (int32, -1 where
    unreachable) and, with ``count_paths``, ``count``: the number of shortest paths to each cell
    capped at 2 (``count == 1`` means the shortest path there is unique); else None.
    """
    b = np.arange(open_.shape[0])
    dist = np.full(open_.shape, -1, dtype=np.int32)
    dist[b, sources[:, 0], sources[:, 1]] = 0
    unvisited = open_.copy()
    unvisited[b, sources[:, 0], sources[:, 1]] = False
    count = None
    if count_paths:
        count = np.zeros(open_.shape, dtype=np.int8)
        count[b, sources[:, 0], sources[:, 1]] = 1
        frontier = count.copy()  # path counts on the current layer, 0 elsewhere
    else:
        frontier = ~unvisited & open_
    d = 0
    while True:
        reach = _neighbour_sum(frontier) if count_paths else _neighbour_any(frontier)
        new = (reach > 0) & unvisited if count_paths else reach & unvisited
        if not new.any():
            return dist, count
        d += 1
        dist[new] = d
        unvisited &= ~new
        if count_paths:
            count[new] = np.minimum(reach[new], 2)
            frontier = np.where(new, count, 0).astype(np.int8)
        else:
            frontier = new


def _neighbour_any(x: np.ndarray) -> np.ndarray:
    """True where some 4-neighbour of a cell of ``[B, H, W]`` bool is True."""
    out = np.zeros_like(x)
    out[:, 1:] |= x[:, :-1]
    out[:, :-1] |= x[:, 1:]
    out[:, :, 1:] |= x[:, :, :-1]
    out[:, :, :-1] |= x[:, :, 1:]
    return out


def _flat_argmax_random(score: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per batch row, the ``(row, col)`` of a uniformly random cell among those with the highest score."""
    flat = score.reshape(score.shape[0], -1).astype(np.float64)
    flat = flat + rng.random(flat.shape) * 0.5  # ties broken at random; scores are integers
    return np.stack(np.unravel_index(np.argmax(flat, axis=1), score.shape[1:]), axis=1)


def _neighbour_min(x: np.ndarray, fill: int) -> np.ndarray:
    """Minimum over the 4-neighbours of every cell of ``[B, H, W]`` (``fill`` outside the grid)."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=fill)
    return np.minimum(np.minimum(padded[:, :-2, 1:-1], padded[:, 2:, 1:-1]),
                      np.minimum(padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]))


def generate_mazes(count: int, size: int, rng: np.random.Generator, desc: str = "generate"
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` mazes with a unique shortest path from S to G, preferring long paths.

    A depth-first perfect maze gives the path: S is the cell farthest from a random open cell
    and G the cell farthest from S (the maze's longest path). Then some walls are knocked down
    to make loops, but only walls every route through which is longer than the S-G path, so
    the loops add detours without a shortcut; a final search confirms the path is still the
    unique shortest one. Returns ``(questions, answers, path_lengths)``: character codes
    ``[count, size*size]`` and the number of steps from S to G; ``size`` is at least
    ``MIN_MAZE_SIZE`` (checked by :class:`MazeBuildConfig`).
    """
    far = np.iinfo(np.int32).max // 4
    questions, answers, lengths = [], [], []
    with progress_bar(total=count, desc=desc, unit="maze", leave=False) as bar:
        while len(lengths) < count:
            batch = min(GENERATE_BATCH_MAX, max(GENERATE_BATCH_MIN, count - len(lengths)))
            open_ = np.stack([carve_maze(size, rng) for _ in range(batch)])
            b = np.arange(batch)

            dist, _ = bfs(open_, _flat_argmax_random(open_, rng))
            start = _flat_argmax_random(dist, rng)
            dist_s, _ = bfs(open_, start)
            goal = _flat_argmax_random(dist_s, rng)
            dist_g, _ = bfs(open_, goal)
            length = dist_s[b, goal[:, 0], goal[:, 1]]

            # Shortest S-G route through a wall cell w once it is opened: enter from the open
            # neighbour nearest S, leave by the one nearest G.
            via = (_neighbour_min(np.where(open_, dist_s, far), far) +
                   _neighbour_min(np.where(open_, dist_g, far), far) + 2)
            interior = np.zeros_like(open_)
            interior[:, 1:-1, 1:-1] = True
            knock = interior & ~open_ & (via > length[:, None, None]) & (via < far)
            open_ |= knock & (rng.random(open_.shape) < LOOP_FRACTION)

            # Several new openings together could still make a shortcut: check again.
            dist_s, paths = bfs(open_, start, count_paths=True)
            dist_g, _ = bfs(open_, goal)
            length = dist_s[b, goal[:, 0], goal[:, 1]]
            # With a unique shortest path, its cells are exactly those whose distances from S and
            # from G add up to the S-G distance.
            on_path = (dist_s >= 0) & (dist_s + dist_g == length[:, None, None])
            ok = (length > 1) & (paths[b, goal[:, 0], goal[:, 1]] == 1) & (on_path.sum(axis=(1, 2)) == length + 1)

            q = np.where(open_, OPEN, WALL).astype(np.uint8)
            q[b, start[:, 0], start[:, 1]] = START
            q[b, goal[:, 0], goal[:, 1]] = GOAL
            a = np.where(on_path & (q == OPEN), PATH, q).astype(np.uint8)
            take = np.flatnonzero(ok)[: count - len(lengths)]
            questions.extend(q[take].reshape(take.size, -1))
            answers.extend(a[take].reshape(take.size, -1))
            lengths.extend(length[take])
            bar.update(take.size)
    return np.stack(questions), np.stack(answers), np.array(lengths, dtype=np.int64)


def describe_lengths(lengths: np.ndarray) -> str:
    """One-line summary of a path-length distribution (min, quartiles, max, mean)."""
    q = np.percentile(lengths, [0, 25, 50, 75, 100]).astype(int)
    return (f"path length (steps S->G): min {q[0]}, 25% {q[1]}, median {q[2]}, 75% {q[3]}, max {q[4]}, "
            f"mean {lengths.mean():.1f}")


# ----------------------------------------------------------------------------------------------
# Dataset writing

def write_split(output_dir: str, split: str, questions: np.ndarray, answers: np.ndarray, aug: bool) -> None:
    """Write one split; with ``aug`` each maze's 8 dihedral forms form its group (one puzzle each)."""
    num, cells = questions.shape
    n = math.isqrt(cells)
    forms = 8 if aug else 1
    grids_q = questions.reshape(num, n, n)
    grids_a = answers.reshape(num, n, n)
    # [num, forms, n, n]: form t of maze i lands at row i * forms + t, as the original loop order.
    inputs = np.stack([dihedral_transform(grids_q, t) for t in range(forms)], axis=1).reshape(num * forms, cells)
    labels = np.stack([dihedral_transform(grids_a, t) for t in range(forms)], axis=1).reshape(num * forms, cells)
    save_split(os.path.join(output_dir, split), CHAR_TO_TOKEN[inputs], CHAR_TO_TOKEN[labels], group_size=forms,
               vocab_size=len(CHARSET) + 1, task="maze")


def build_maze_dataset(config: MazeBuildConfig) -> None:
    """Build ``config.output_dir`` (written to a temporary folder, moved into place when complete)."""
    local = config.generate is None and os.path.isdir(config.source_repo)
    check_output_dir(config.output_dir, [("--source-repo", config.source_repo)] if local else [])
    rng = np.random.default_rng(config.seed)
    splits = {}
    if config.generate is not None:
        num_test = config.generate_test if config.generate_test is not None else max(1, config.generate // 10)
        q, a, lengths = generate_mazes(config.generate + num_test, config.size, rng,
                                       desc=f"generate {config.size}x{config.size}")
        print(f"generated {q.shape[0]} mazes; {describe_lengths(lengths)}")
        splits["train"] = (q[:config.generate], a[:config.generate])
        splits["test"] = (q[config.generate:], a[config.generate:])
    else:
        n = None
        for split in ("train", "test"):
            path = resolve_source_csv(config.source_repo, split)
            q, a, _ = read_maze_csv(path)
            if n is not None and q.shape[1] != n:
                raise DatasetError(f"{path}: grids of {q.shape[1]} cells, but train.csv has {n}")
            n = q.shape[1]
            splits[split] = (q, a)
            print(f"{split}: read {q.shape[0]} mazes from {path}")
    keep = subsample_rows(splits["train"][0].shape[0], config.subsample_size, rng)
    splits["train"] = (splits["train"][0][keep], splits["train"][1][keep])

    forms = {split: 8 if config.aug and split == "train" else 1 for split in splits}
    # inputs and labels (one byte per cell) and three int32 index entries per example
    needed = sum(q.shape[0] * forms[split] * (2 * q.shape[1] + 12) for split, (q, _) in splits.items())
    with atomic_output_dir(config.output_dir, needed_bytes=needed) as tmp:
        for split, (q, a) in splits.items():
            t0 = time.perf_counter()
            write_split(tmp, split, q, a, aug=forms[split] > 1)
            print(f"{split}: {q.shape[0]} mazes written in {time.perf_counter() - t0:.1f}s")
        save_identifiers(tmp, ["<blank>"])
    print(f"wrote {config.output_dir}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Build the dataset the command line asks for (one option per field of :class:`MazeBuildConfig`)."""
    build_maze_dataset(parse_config(MazeBuildConfig, argv, description=__doc__))


if __name__ == "__main__":
    run_cli(main)
