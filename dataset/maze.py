"""Maze rules: the original charset and its tokens, breadth-first search over batches of grids, and a generator.

Cells use the original charset ``"# SGo"`` (wall, open, start, goal, path), tokens 1..5 with PAD 0.
A maze's answer marks the cells of its unique shortest path from S to G (endpoints excluded).
Used by ``dataset/build_maze_dataset.py`` (the command line) and by ``tasks/maze.py``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

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


# ----------------------------------------------------------------------------------------------
# Search and generator

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
    ``MIN_MAZE_SIZE`` (the builder's options check it).
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
