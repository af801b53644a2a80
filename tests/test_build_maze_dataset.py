"""Maze builder: same output as the original on its CSVs, 8 dihedral forms with --aug, generated
datasets, clear errors on bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REFERENCE_DATASETS, assert_same_as_reference, load_split, needs_reference_datasets, reference_csv_source
from dataset.common import dihedral_transform
from dataset.maze import CHARSET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDER = os.path.join(ROOT, "dataset", "build_maze_dataset.py")
REFERENCE = str(REFERENCE_DATASETS)
needs_reference = needs_reference_datasets


def run_builder(*args, module=False):
    cmd = [sys.executable, "-m", "dataset.build_maze_dataset"] if module else [sys.executable, BUILDER]
    return subprocess.run(cmd + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def reference_source(tmp_path):
    return reference_csv_source(tmp_path, "maze")


# ----------------------------------------------------------------------------------------------
# Same output as the original

@pytest.mark.slow
@needs_reference
@pytest.mark.parametrize("module", [False, True])
def test_reference_csvs_build_the_reference_arrays(tmp_path, module):
    out = tmp_path / "out"
    res = run_builder("--source-repo", reference_source(tmp_path), "--output-dir", out, module=module)
    assert res.returncode == 0, res.stderr
    assert_same_as_reference(out, "maze")


@pytest.mark.slow
@needs_reference
def test_aug_gives_the_8_dihedral_forms_as_one_group(tmp_path):
    out = tmp_path / "out"
    assert run_builder("--source-repo", reference_source(tmp_path), "--output-dir", out, "--aug").returncode == 0
    ref = load_split(os.path.join(REFERENCE, "maze"), "train")
    train = load_split(out, "train")
    n = 11
    assert train["inputs"].shape == (24 * 8, n * n)
    np.testing.assert_array_equal(train["group_indices"], np.arange(0, 24 * 8 + 1, 8))
    for i in range(24):
        for t in range(8):
            for f in ("inputs", "labels"):
                want = dihedral_transform(ref[f][i].reshape(n, n), t).ravel()
                np.testing.assert_array_equal(train[f][i * 8 + t], want)
    assert load_split(out, "test")["inputs"].shape == (8, n * n)  # test is never augmented


# ----------------------------------------------------------------------------------------------
# Generated mazes

@pytest.mark.slow
def test_generate_cli_writes_dataset_and_reports_lengths(tmp_path):
    out = tmp_path / "gen"
    res = run_builder("--generate", 10, "--generate-test", 2, "--size", 13, "--aug", "--output-dir", out)
    assert res.returncode == 0, res.stderr
    assert "path length (steps S->G): min" in res.stdout
    meta = json.load(open(out / "train" / "dataset.json"))
    assert (meta["seq_len"], meta["vocab_size"], meta["total_groups"]) == (169, len(CHARSET) + 1, 10)
    train = load_split(out, "train")
    assert train["inputs"].shape == (80, 169) and train["inputs"].max() <= 4 and train["labels"].max() == 5


# ----------------------------------------------------------------------------------------------
# Bad input

ROW = "#####" "#S  #" "# # #" "#  G#" "#####"
SOLVED = "#####" "#Soo#" "# #o#" "#  G#" "#####"


@pytest.mark.slow
@pytest.mark.parametrize("q, a, message", [
    (ROW[:-1], SOLVED, "line 3: question has 24 characters, expected 25"),
    (ROW[:-1] + "x", SOLVED, "line 3: character outside the maze charset"),
    (ROW, SOLVED.replace("# #o#", "#  o#"), "line 3: answer differs from the question"),  # a wall vanished
])
def test_bad_csv_rows_are_clear_errors(tmp_path, q, a, message):
    src = tmp_path / "src"
    src.mkdir()
    for name, rows in (("train.csv", [(ROW, SOLVED), (q, a)]), ("test.csv", [(ROW, SOLVED)])):
        (src / name).write_text("source,question,answer,rating\n" + "".join(f"gen,{x},{y},0\n" for x, y in rows))
    res = run_builder("--source-repo", src, "--output-dir", tmp_path / "out")
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: {src / 'train.csv'}: {message}"), res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()


def test_generated_dataset_records_the_task_and_empty_fields_are_one_line(tmp_path, capsys):
    from dataset.build_maze_dataset import main
    from dataset.common import run_cli
    run_cli(main, ["--generate", "3", "--generate-test", "1", "--size", "7", "--output-dir", str(tmp_path / "gen")])
    for split in ("train", "test"):
        assert json.loads((tmp_path / "gen" / split / "dataset.json").read_text())["task"] == "maze"
    src = tmp_path / "src"
    src.mkdir()
    for name, rows in (("train.csv", [(ROW, SOLVED), (ROW, "")]), ("test.csv", [(ROW, SOLVED)])):
        (src / name).write_text("source,question,answer,rating\n" + "".join(f",{x},{y},0\n" for x, y in rows))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(main, ["--source-repo", str(src), "--output-dir", str(tmp_path / "out")])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"error: {src / 'train.csv'}: line 3: the answer field is empty\n"


def test_output_folder_of_other_files_or_holding_the_source_is_refused(tmp_path, capsys):
    from dataset.build_maze_dataset import main
    from dataset.common import run_cli
    out = tmp_path / "out"
    src = out / "src"
    src.mkdir(parents=True)
    for name in ("train.csv", "test.csv"):  # with a byte-order mark, as Windows editors write them
        (src / name).write_text("\ufeffsource,question,answer,rating\n" + f"gen,{ROW},{SOLVED},0\n", encoding="utf-8")
    before = sorted(p.name for p in out.rglob("*"))
    for argv, message in [
            (["--generate", "2", "--size", "7", "--output-dir", str(out)],
             f"error: --output-dir {out} holds files that are not a dataset (src/): choose an empty or new folder\n"),
            (["--source-repo", str(src), "--output-dir", str(out)],
             f"error: --source-repo {src} is inside --output-dir {out}, which the build replaces as a whole: "
             "choose another output folder\n")]:
        with pytest.raises(SystemExit) as e:
            run_cli(main, argv)
        assert (e.value.code, capsys.readouterr().err) == (2, message)
        assert sorted(p.name for p in out.rglob("*")) == before and os.listdir(tmp_path) == ["out"]
    run_cli(main, ["--source-repo", str(src), "--output-dir", str(tmp_path / "ds")])
    assert load_split(tmp_path / "ds", "test")["inputs"].shape == (1, 25)
