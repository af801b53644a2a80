"""scripts/inspect_sudoku_dataset.py prints grids of any n x n Sudoku and names the first invalid example."""
import os
import subprocess
import sys

import numpy as np
import pytest

from dataset.build_sudoku_dataset import write_split
from dataset.common import save_identifiers
from dataset.sudoku import generate_sudoku

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "inspect_sudoku_dataset.py")


def run_inspect(*args, module=False):
    cmd = [sys.executable, "-m", "scripts.inspect_sudoku_dataset"] if module else [sys.executable, SCRIPT]
    return subprocess.run(cmd + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def make_dataset(path, n, count=4, num_aug=3):
    rng = np.random.default_rng(n)
    puzzles, solutions, _ = generate_sudoku(count, n, rng)
    write_split(str(path), "train", puzzles, solutions, n, num_aug, rng)
    write_split(str(path), "test", puzzles[:2], solutions[:2], n, 0, rng)
    save_identifiers(str(path), ["<blank>"])
    return puzzles, solutions


@pytest.mark.slow
@pytest.mark.parametrize("n, module", [(9, False), (6, True), (4, False)])
def test_valid_datasets_print_grids_and_pass(tmp_path, n, module):
    puzzles, solutions = make_dataset(tmp_path, n)
    res = run_inspect("--data-path", tmp_path, "--split", "train", "--num", 2, module=module)
    assert res.returncode == 0, res.stderr
    assert f"checked 16 examples of train: every solution is a valid {n}x{n} Sudoku" in res.stdout
    assert res.stdout.count("solution\n") == 2
    # the first printed solution grid shows the first solution's digits row by row
    first_row = " ".join(map(str, solutions[0][:n]))
    assert first_row.replace(" ", "") in res.stdout.replace(" ", "").replace("|", "")


@pytest.mark.slow
def test_an_invalid_solution_is_named(tmp_path):
    make_dataset(tmp_path, 6)
    labels_path = tmp_path / "train" / "all__labels.npy"
    labels = np.load(labels_path)
    labels[5, [0, 1]] = labels[5, [1, 0]]  # swap two cells of one row: columns now repeat a digit
    np.save(labels_path, labels)
    res = run_inspect("--data-path", tmp_path, "--split", "train", "--num", 0)
    assert res.returncode == 2
    assert res.stderr.strip().startswith(f"error: {labels_path}: example 5: solution")
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_a_solution_contradicting_a_clue_is_named(tmp_path):
    make_dataset(tmp_path, 4)
    inputs_path = tmp_path / "test" / "all__inputs.npy"
    inputs, labels = np.load(inputs_path), np.load(tmp_path / "test" / "all__labels.npy")
    cell = int(np.flatnonzero(inputs[1] > 1)[0])  # a clue
    inputs[1, cell] = (labels[1, cell] - 1) % 4 + 2  # a different digit
    np.save(inputs_path, inputs)
    res = run_inspect("--data-path", tmp_path, "--split", "test", "--num", 1)
    assert res.returncode == 2
    assert "example 1: solution contradicts the clue at row" in res.stderr


@pytest.mark.slow
def test_missing_dataset_is_a_clear_error(tmp_path):
    res = run_inspect("--data-path", tmp_path, "--split", "train")
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: {tmp_path / 'train' / 'dataset.json'}: missing")
