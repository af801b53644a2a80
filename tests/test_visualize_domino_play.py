"""The ASCII domino drawing shows the example's table, ends, playable tiles and target."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VISUALIZE = os.path.join(ROOT, "scripts", "visualize_domino_play.py")


def run(*args):
    return subprocess.run([sys.executable, VISUALIZE] + [str(a) for a in args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("vis") / "data"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "dataset", "build_domino_dataset.py"),
                             "--output-dir", str(out), "--num-games", "60", "--seed", "11"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def pick_examples(x):
    """An empty table, a short table, a long table and a one-tile hand."""
    table_len = (x[:, :56:2] != 0).sum(1)
    hand_size = (x[:, 56:70:2] != 0).sum(1)
    picks = [np.flatnonzero(table_len == 0)[0], np.flatnonzero(table_len == 2)[0],
             np.flatnonzero(table_len >= 9)[0], np.flatnonzero(hand_size == 1)[0]]
    return sorted({int(i) for i in picks})


@pytest.mark.slow
def test_drawing_matches_the_arrays(built):
    x = np.load(built / "test" / "all__inputs.npy")
    y = np.load(built / "test" / "all__labels.npy")
    for i in pick_examples(x):
        result = run("--data-path", built, "--split", "test", "--index", i)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert out.startswith(f"test example {i} (puzzle {i}, group {i})")
        table = [(x[i][k] - 1, x[i][k + 1] - 1) for k in range(0, 56, 2) if x[i][k]]
        hand = [(x[i][k] - 1, x[i][k + 1] - 1) for k in range(56, 70, 2) if x[i][k]]
        if table:
            assert "".join(f"[{a}|{b}]" for a, b in table) in out
            left, right = table[0][0], table[-1][1]
            assert f"left end {left}" in out and f"right end {right}" in out
        else:
            assert "(empty" in out and "Ends: none yet" in out
        # one hand line per tile: ">>" on the label's tile, "*" on the other playable ones
        marks = dict((tuple(map(int, t)), m) for m, *t in re.findall(r"^  (>>| \*|  ) \[(\d)\|(\d)\]", out, re.M))
        assert set(marks) == set(hand)
        target = (int(y[i][0]) - 1, int(y[i][1]) - 1)
        for tile, mark in marks.items():
            fits = not table or table[0][0] in tile or table[-1][1] in tile
            assert mark == (">>" if tile == target else " *" if fits else "  "), (i, tile, mark)
        side = {1: "at the LEFT end", 2: "at the RIGHT end", 3: "to open the table"}[int(y[i][2])]
        assert f"Target: play [{target[0]}|{target[1]}] {side}" in out


@pytest.mark.slow
def test_bad_index_and_broken_example(built, tmp_path):
    result = run("--data-path", built, "--split", "test", "--index", 60)
    assert result.returncode == 2 and result.stderr.startswith("error: --index 60") and "0..59" in result.stderr
    result = run("--data-path", tmp_path / "nothing", "--split", "test", "--index", 0)
    assert result.returncode == 2 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
    # break example 4's label: the drawing refuses it and names it instead of drawing nonsense
    shutil.copytree(built, tmp_path / "bad")
    labels = np.load(tmp_path / "bad" / "test" / "all__labels.npy")
    labels[4][2] = 7
    np.save(tmp_path / "bad" / "test" / "all__labels.npy", labels)
    result = run("--data-path", tmp_path / "bad", "--split", "test", "--index", 4)
    assert result.returncode == 2 and result.stderr.startswith("error: test example 4 (puzzle 4, group 4)")
    assert run("--data-path", tmp_path / "bad", "--split", "test", "--index", 3).returncode == 0
