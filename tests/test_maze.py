"""Maze rules: generated labels are unique shortest paths (checked with a separate breadth-first
search), and long paths are preferred."""
import collections

import numpy as np

from dataset.maze import generate_mazes


def shortest_paths(grid):
    """Plain BFS from S over non-wall cells: (distance to G, number of shortest paths to G, dist map)."""
    n = grid.shape[0]
    start = tuple(np.argwhere(grid == "S")[0])
    goal = tuple(np.argwhere(grid == "G")[0])
    dist, ways = {start: 0}, {start: 1}
    queue = collections.deque([start])
    while queue:
        r, c = queue.popleft()
        for nb in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nb[0] < n and 0 <= nb[1] < n and grid[nb] != "#":
                if nb not in dist:
                    dist[nb], ways[nb] = dist[(r, c)] + 1, 0
                    queue.append(nb)
                if dist[nb] == dist[(r, c)] + 1:
                    ways[nb] += ways[(r, c)]
    return dist[goal], ways[goal], start, goal


def test_generated_labels_are_unique_shortest_paths():
    size = 15
    questions, answers, lengths = generate_mazes(12, size, np.random.default_rng(4))
    for q, a, length in zip(questions, answers, lengths):
        grid = np.array(list(q.tobytes().decode())).reshape(size, size)
        label = np.array(list(a.tobytes().decode())).reshape(size, size)
        assert set(grid.ravel()) <= set("# SG") and (grid == "S").sum() == 1 and (grid == "G").sum() == 1
        assert (grid[0] == "#").all() and (grid[-1] == "#").all() and (grid[:, 0] == "#").all()
        dist, ways, start, goal = shortest_paths(grid)
        assert ways == 1 and dist == length
        # the marked cells plus S and G form one path of exactly that many steps
        path = {tuple(x) for x in np.argwhere(label == "o")}
        assert len(path) == dist - 1 and all(grid[p] == " " for p in path)
        assert np.array_equal(label[label != "o"], grid[label != "o"])
        cur, steps, remaining = start, 0, set(path)
        while cur != goal:
            nxt = [nb for nb in ((cur[0] + 1, cur[1]), (cur[0] - 1, cur[1]), (cur[0], cur[1] + 1), (cur[0], cur[1] - 1))
                   if nb in remaining or (nb == goal and not remaining)]
            assert len(nxt) == 1
            cur = nxt[0]
            remaining.discard(cur)
            steps += 1
        assert steps == dist
    assert lengths.min() > size  # long paths are preferred
