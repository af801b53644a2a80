"""Sudoku rules: generated puzzles are distinct, valid and minimal with exactly one solution,
checked by a separate plain backtracking solver."""
import numpy as np
import pytest

from dataset.sudoku import box_shape, generate_sudoku, inconsistent_with_clues, invalid_solutions


def count_solutions(grid, n, limit=2):
    """Independent plain backtracking solver (sets, fewest-candidates cell first): solutions up to ``limit``."""
    br, bc = box_shape(n)
    grid = list(grid)

    def candidates(i):
        r, c = divmod(i, n)
        used = {grid[r * n + k] for k in range(n)} | {grid[k * n + c] for k in range(n)}
        r0, c0 = r - r % br, c - c % bc
        used |= {grid[(r0 + a) * n + c0 + b] for a in range(br) for b in range(bc)}
        return [d for d in range(1, n + 1) if d not in used]

    def search(limit):
        blanks = [i for i in range(n * n) if grid[i] == 0]
        if not blanks:
            return 1
        options, cell = min(((candidates(i), i) for i in blanks), key=lambda t: len(t[0]))
        found = 0
        for d in options:
            grid[cell] = d
            found += search(limit - found)
            grid[cell] = 0
            if found >= limit:
                break
        return found

    return search(limit)


@pytest.mark.parametrize("n, count", [(4, 12), (6, 10), (9, 3)])
def test_generated_puzzles_have_exactly_one_solution(n, count):
    puzzles, solutions, ratings = generate_sudoku(count, n, np.random.default_rng(100 + n))
    assert len({p.tobytes() for p in puzzles}) == count
    assert not invalid_solutions(solutions, n).any() and not inconsistent_with_clues(puzzles, solutions).any()
    assert ratings.dtype == np.int64 and (ratings >= 0).all()
    for p in puzzles:
        assert count_solutions(p, n) == 1
        # minimal: removing any clue gives a second solution
        clue = int(np.flatnonzero(p)[0])
        q = p.copy()
        q[clue] = 0
        assert count_solutions(q, n) == 2
