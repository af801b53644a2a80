"""Sudoku builder: same output as the original on its CSVs, valid augmentations for every grid size,
generated datasets, clear errors on bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dataset.build_sudoku_dataset import augment_set
from dataset.sudoku import SUDOKU_BOXES, generate_sudoku, inconsistent_with_clues, invalid_solutions
from conftest import REFERENCE_DATASETS, assert_same_as_reference, load_split, needs_reference_datasets, reference_csv_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDER = os.path.join(ROOT, "dataset", "build_sudoku_dataset.py")
REFERENCE = str(REFERENCE_DATASETS)
needs_reference = needs_reference_datasets


def run_builder(*args, module=False, cwd=ROOT):
    cmd = [sys.executable, "-m", "dataset.build_sudoku_dataset"] if module else [sys.executable, BUILDER]
    return subprocess.run(cmd + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)


def reference_source(tmp_path):
    return reference_csv_source(tmp_path, "sudoku")


def write_csv(path, rows):
    with open(path, "w") as f:
        f.write("source,question,answer,rating\n")
        for q, a, r in rows:
            f.write(f"gen,{q},{a},{r}\n")


def grids_to_csv_rows(puzzles, solutions, ratings):
    return [("".join(str(d) if d else "." for d in q), "".join(map(str, a)), r)
            for q, a, r in zip(puzzles, solutions, ratings)]


# ----------------------------------------------------------------------------------------------
# Same output as the original

@pytest.mark.slow
@needs_reference
@pytest.mark.parametrize("module", [False, True])
def test_reference_csvs_build_the_reference_arrays(tmp_path, module):
    out = tmp_path / "out"
    res = run_builder("--source-repo", reference_source(tmp_path), "--output-dir", out, module=module)
    assert res.returncode == 0, res.stderr
    assert_same_as_reference(out, "sudoku")


@pytest.mark.slow
@needs_reference
def test_augmented_csv_build_groups_copies_and_keeps_them_valid(tmp_path):
    out = tmp_path / "out"
    res = run_builder("--source-repo", reference_source(tmp_path), "--output-dir", out, "--num_aug", 20,
                      "--subsample-size", 10, "--min-difficulty", 2, "--seed", 3)
    assert res.returncode == 0, res.stderr
    train, test = load_split(out, "train"), load_split(out, "test")
    assert train["inputs"].shape == (10 * 21, 81)
    np.testing.assert_array_equal(train["group_indices"], np.arange(0, 211, 21))
    np.testing.assert_array_equal(train["puzzle_indices"], np.arange(211))
    # copy 0 of each group is an original row rated >= 2 (the reference rows are rated 0, 1, 2, 3, 4, 0, ...)
    ref = load_split(os.path.join(REFERENCE, "sudoku"), "train")
    originals = {row.tobytes(): i for i, row in enumerate(ref["inputs"])}
    picked = [originals[row.tobytes()] for row in train["inputs"][::21]]
    assert len(set(picked)) == 10 and all(i % 5 >= 2 for i in picked)
    assert not invalid_solutions(train["labels"] - 1, 9).any()
    assert not inconsistent_with_clues(train["inputs"] - 1, train["labels"] - 1).any()
    # test is filtered by difficulty like train (as the original), never subsampled nor augmented
    with open(os.path.join(REFERENCE, "raw", "sudoku_test.csv")) as f:
        test_ratings = [int(line.rsplit(",", 1)[1]) for line in f.read().splitlines()[1:]]
    assert test["inputs"].shape == (sum(r >= 2 for r in test_ratings), 81)
    meta = json.load(open(out / "train" / "dataset.json"))
    assert meta["total_groups"] == 10 and meta["mean_puzzle_examples"] == 1 and meta["total_puzzles"] == 210


# ----------------------------------------------------------------------------------------------
# Augmentation for every grid size

@pytest.mark.parametrize("n", sorted(SUDOKU_BOXES))
def test_every_augmented_copy_is_a_valid_puzzle(n):
    rng = np.random.default_rng(n)
    puzzles, solutions, _ = generate_sudoku(4, n, rng)
    inputs, labels = augment_set(puzzles, solutions, n, 60, rng)
    assert inputs.shape == (4 * 61, n * n)
    np.testing.assert_array_equal(inputs[::61], puzzles)
    assert not invalid_solutions(labels, n).any()
    assert not inconsistent_with_clues(inputs, labels).any()
    # blanks stay blanks: every copy keeps its source's number of clues
    np.testing.assert_array_equal((inputs > 0).sum(1), np.repeat((puzzles > 0).sum(1), 61))
    assert len({row.tobytes() for row in labels}) > 30  # the copies actually differ
    # the checker itself rejects a broken grid (two cells of one row swapped across boxes)
    broken = labels[:1].copy()
    broken[0, [0, n - 1]] = broken[0, [n - 1, 0]]
    assert invalid_solutions(broken, n).all()


@pytest.mark.slow
def test_generate_cli_writes_a_6x6_dataset(tmp_path):
    out = tmp_path / "s6"
    res = run_builder("--generate", 6, "--generate-test", 3, "--grid", 6, "--num-aug", 4, "--output-dir", out)
    assert res.returncode == 0, res.stderr
    meta = json.load(open(out / "train" / "dataset.json"))
    assert (meta["seq_len"], meta["vocab_size"], meta["total_groups"]) == (36, 8, 6)
    train, test = load_split(out, "train"), load_split(out, "test")
    assert train["inputs"].shape == (30, 36) and test["inputs"].shape == (3, 36)
    np.testing.assert_array_equal(train["group_indices"], [0, 5, 10, 15, 20, 25, 30])
    assert not invalid_solutions(train["labels"] - 1, 6).any()
    # train and test puzzles are distinct
    assert not {r.tobytes() for r in train["inputs"][::5]} & {r.tobytes() for r in test["inputs"]}
    again = tmp_path / "again"
    assert run_builder("--generate", 6, "--generate-test", 3, "--grid", 6, "--num-aug", 4, "--output-dir", again).returncode == 0
    np.testing.assert_array_equal(load_split(again, "train")["labels"], train["labels"])  # seeded


@pytest.mark.slow
def test_generated_csv_round_trip_keeps_6x6(tmp_path):
    puzzles, solutions, ratings = generate_sudoku(5, 6, np.random.default_rng(0))
    write_csv(tmp_path / "train.csv", grids_to_csv_rows(puzzles, solutions, ratings))
    write_csv(tmp_path / "test.csv", grids_to_csv_rows(puzzles[:2], solutions[:2], ratings[:2]))
    res = run_builder("--source-repo", tmp_path, "--output-dir", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    np.testing.assert_array_equal(load_split(tmp_path / "out", "train")["inputs"], puzzles + 1)


# ----------------------------------------------------------------------------------------------
# Bad input: one line naming file and row, nothing written

GOOD_Q = ".........376..9.2....54....4.2.3..816.............47.9...9.....94.....3.8......16"
GOOD_A = "254367198376189425189542673492736581617895342538214769763921854941658237825473916"


@pytest.mark.slow
@pytest.mark.parametrize("q, a, message", [
    (GOOD_Q[:-1], GOOD_A, "line 3: question has 80 characters, expected 81"),
    (GOOD_Q[:-1] + "x", GOOD_A, "line 3: question has a character outside '.' and 1..9"),
    (GOOD_Q, GOOD_A[:-1] + "0", "line 3: answer has a character outside 1..9"),
    ("3" + GOOD_Q[1:], GOOD_A, "line 3: answer contradicts a clue of the question"),
    (GOOD_Q, GOOD_A[1:] + GOOD_A[:1], "line 3: answer"),
])
def test_bad_csv_rows_are_clear_errors(tmp_path, q, a, message):
    src = tmp_path / "src"
    src.mkdir()
    write_csv(src / "train.csv", [(GOOD_Q, GOOD_A, 0), (q, a, 1)])
    write_csv(src / "test.csv", [(GOOD_Q, GOOD_A, 0)])
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / "train" / "dataset.json").write_text("previous build")
    res = run_builder("--source-repo", src, "--output-dir", out)
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: {src / 'train.csv'}: {message}"), res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert os.listdir(out) == ["train"] and (out / "train" / "dataset.json").read_text() == "previous build"
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]


@pytest.mark.slow
def test_missing_local_csv_and_bad_options(tmp_path):
    (tmp_path / "train.csv").write_text("source,question,answer,rating\n")
    res = run_builder("--source-repo", tmp_path, "--output-dir", tmp_path / "out")
    assert res.returncode == 2 and "no puzzles after the header line" in res.stderr
    res = run_builder("--generate", 3, "--grid", 5)
    assert res.returncode == 2 and "invalid choice" in res.stderr
    res = run_builder("--num-aug", -1)
    assert res.returncode == 2 and "--num-aug must be non-negative" in res.stderr


def test_dataset_json_records_the_task(sudoku4):
    for split in ("train", "test"):
        assert json.loads((sudoku4 / split / "dataset.json").read_text())["task"] == "sudoku"


def test_empty_question_field_is_one_line(tmp_path, capsys):
    from dataset.build_sudoku_dataset import main
    from dataset.common import run_cli
    src = tmp_path / "src"
    src.mkdir()
    write_csv(src / "train.csv", [(GOOD_Q, GOOD_A, 0), ("", GOOD_A, 1)])
    write_csv(src / "test.csv", [(GOOD_Q, GOOD_A, 0)])
    with pytest.raises(SystemExit) as e:
        run_cli(main, ["--source-repo", str(src), "--output-dir", str(tmp_path / "out")])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"error: {src / 'train.csv'}: line 3: the question field is empty\n"
    assert not (tmp_path / "out").exists()


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_output_folder_of_other_files_or_holding_the_source_is_refused(tmp_path, capsys):
    from dataset.build_sudoku_dataset import main
    from dataset.common import run_cli
    datadir = tmp_path / "datadir"
    (datadir / "sudoku-old").mkdir(parents=True)
    write_csv(datadir / "sudoku-old" / "train.csv", [(GOOD_Q, GOOD_A, 0)])
    write_csv(datadir / "sudoku-old" / "test.csv", [(GOOD_Q, GOOD_A, 0)])
    (datadir / "notes.txt").write_text("mine")
    before = tree(datadir)
    for argv, message in [
            (["--generate", "5", "--grid", "4", "--output-dir", str(datadir)],
             f"error: --output-dir {datadir} holds files that are not a dataset (notes.txt, sudoku-old/): "
             "choose an empty or new folder\n"),
            (["--source-repo", str(datadir / "sudoku-old"), "--output-dir", str(datadir)],
             f"error: --source-repo {datadir / 'sudoku-old'} is inside --output-dir {datadir}, which the build "
             "replaces as a whole: choose another output folder\n")]:
        with pytest.raises(SystemExit) as e:
            run_cli(main, argv)
        assert (e.value.code, capsys.readouterr().err) == (2, message)
        assert tree(datadir) == before and sorted(os.listdir(tmp_path)) == ["datadir"]
    # A dataset folder is replaced; the CSVs of a local source may begin with a byte-order mark.
    src = datadir / "sudoku-old"
    for split in ("train", "test"):
        (src / f"{split}.csv").write_bytes(b"\xef\xbb\xbf" + (src / f"{split}.csv").read_bytes())
    run_cli(main, ["--source-repo", str(src), "--output-dir", str(tmp_path / "ds")])
    run_cli(main, ["--generate", "3", "--grid", "4", "--output-dir", str(tmp_path / "ds")])
    assert load_split(tmp_path / "ds", "train")["inputs"].shape == (3, 16)


def test_generated_9x9_says_it_is_easy_and_min_difficulty_keeps_hard_ones(tmp_path, capsys):
    """Random minimal 9x9 puzzles mostly need no guess: the builder says so; --min-difficulty keeps
    those the solver needs at least that many guesses for (re-solved here)."""
    from dataset.build_sudoku_dataset import SudokuBuildConfig, build_sudoku_dataset
    from dataset.sudoku import SudokuSolver
    out = tmp_path / "hard"
    build_sudoku_dataset(SudokuBuildConfig(generate=40, generate_test=10, grid=9, min_difficulty=1, output_dir=str(out)))
    printed = capsys.readouterr().out
    assert "generated 9x9 Sudoku is easy and no stand-in for Sudoku-Extreme" in printed
    assert "puzzles kept with rating >= --min-difficulty 1" in printed
    puzzles = np.load(out / "train" / "all__inputs.npy").astype(np.int64) - 1
    assert len(puzzles) >= 1
    solver = SudokuSolver(9)
    for p in puzzles:
        assert len(solver.solve(p.tolist())) == 1 and solver.guesses >= 1
