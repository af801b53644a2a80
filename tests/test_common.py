"""dataset/common.py: dihedral transforms, metadata I/O, atomic output, the fast CSV reader, CLI errors,
the builder skeleton (options, task key, stale temporary folders, full disk)."""
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Literal, Optional

import numpy as np
import pydantic
import pytest

from dataset.common import (DIHEDRAL_INVERSE, DatasetError, NpyFile, OptionError, PuzzleCSV, PuzzleDatasetMetadata,
                            atomic_output_dir, check_output_dir, dihedral_transform, inverse_dihedral_transform,
                            load_metadata, parse_config, resolve_source_csv, run_cli, save_identifiers, save_metadata,
                            save_set, save_split, subsample_rows)
from test_docs import INTERNAL_REFERENCE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------
# Dihedral transforms

def test_dihedral_transforms_match_their_definitions():
    g = np.arange(6).reshape(2, 3)  # not square, no symmetry
    expected = [g, np.rot90(g), np.rot90(g, 2), np.rot90(g, 3), g[:, ::-1], g[::-1, :], g.T, np.rot90(g)[:, ::-1]]
    for tid, want in enumerate(expected):
        np.testing.assert_array_equal(dihedral_transform(g, tid), want)
    # The 8 symmetries of a generic square grid are all different.
    sq = np.arange(9).reshape(3, 3)
    assert len({dihedral_transform(sq, t).tobytes() for t in range(8)}) == 8
    # Transform 7 is the anti-diagonal reflection: (r, c) -> (n-1-c, n-1-r).
    np.testing.assert_array_equal(dihedral_transform(sq, 7), sq[::-1, ::-1].T)


def test_inverse_dihedral_restores_and_inverse_table():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 10, size=(4, 7))
    for tid in range(8):
        np.testing.assert_array_equal(inverse_dihedral_transform(dihedral_transform(g, tid), tid), g)
        np.testing.assert_array_equal(dihedral_transform(dihedral_transform(g, tid), DIHEDRAL_INVERSE[tid]), g)
    assert DIHEDRAL_INVERSE == [0, 3, 2, 1, 4, 5, 6, 7]


def test_dihedral_acts_on_last_two_axes_of_a_batch():
    batch = np.random.default_rng(1).integers(0, 5, size=(3, 4, 4))
    for tid in range(8):
        out = dihedral_transform(batch, tid)
        for i in range(3):
            np.testing.assert_array_equal(out[i], dihedral_transform(batch[i], tid))
    with pytest.raises(ValueError):
        dihedral_transform(batch, 8)


# ----------------------------------------------------------------------------------------------
# Metadata, arrays, identifiers, atomic output

def _meta(**kw):
    base = dict(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=4,
                num_puzzle_identifiers=1, total_groups=1, mean_puzzle_examples=1.0, sets=["all"])
    base.update(kw)
    return PuzzleDatasetMetadata(**base)


def test_metadata_round_trip_and_clear_errors(tmp_path):
    save_metadata(str(tmp_path), _meta(total_puzzles=3))
    assert load_metadata(str(tmp_path)).total_puzzles == 3
    with pytest.raises(DatasetError, match="dataset.json: missing"):
        load_metadata(str(tmp_path / "nowhere"))
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a valid dataset.json"):
        load_metadata(str(tmp_path))
    (tmp_path / "dataset.json").write_text(json.dumps({"pad_id": 0}))
    with pytest.raises(DatasetError, match="not a valid dataset.json"):
        load_metadata(str(tmp_path))


def test_save_set_and_identifiers(tmp_path):
    arrays = {"inputs": np.ones((2, 4), np.uint8), "labels": np.ones((2, 4), np.uint8),
              "puzzle_identifiers": np.zeros(2, np.int32), "puzzle_indices": np.arange(3, dtype=np.int32),
              "group_indices": np.array([0, 2], np.int32)}
    save_set(str(tmp_path / "train"), "all", arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(np.load(tmp_path / "train" / f"all__{k}.npy"), v)
    with pytest.raises(ValueError, match="missing arrays"):
        save_set(str(tmp_path / "x"), "all", {"inputs": arrays["inputs"]})
    save_identifiers(str(tmp_path), ["<blank>", "a|||t1|||0123456789"])
    assert json.loads((tmp_path / "identifiers.json").read_text()) == ["<blank>", "a|||t1|||0123456789"]


def make_dataset(folder, *extra_files):
    """A small dataset folder as a builder writes it (plus ``extra_files`` at its top)."""
    for split in ("train", "test"):
        save_split(str(folder / split), np.ones((2, 4), np.uint8), np.ones((2, 4), np.uint8), vocab_size=3,
                   task="t", group_size=1)
    save_identifiers(str(folder), ["<blank>"])
    for name in extra_files:
        (folder / name).write_text("{}")
    return folder


def test_atomic_output_dir_replaces_only_on_success(tmp_path):
    out = make_dataset(tmp_path / "ds")
    before = (out / "train" / "all__inputs.npy").read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_output_dir(str(out)) as tmp:
            (open(os.path.join(tmp, "new.txt"), "w")).write("half")
            raise RuntimeError("builder failed")
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no temporary folder left behind
    assert (out / "train" / "all__inputs.npy").read_bytes() == before
    with atomic_output_dir(str(out)) as tmp:
        (open(os.path.join(tmp, "new.txt"), "w")).write("complete")
    assert sorted(os.listdir(out)) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["ds"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OptionError, match="not a folder"):
        with atomic_output_dir(str(tmp_path / "file")):
            pass


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("make, shown", [
    # a custom build into the folder of its own sources
    (lambda d: [(d / "train.jsonl").write_text("{}"), (d / "test.jsonl").write_text("{}"), (d / "notes").mkdir()],
     "notes/, test.jsonl, train.jsonl"),
    (lambda d: [make_dataset(d), (d / "README.md").write_text("mine")], "README.md"),  # a dataset and a file
    (lambda d: [make_dataset(d), (d / "train" / "notes.txt").write_text("mine")], "train/notes.txt"),
    (lambda d: [make_dataset(d), (d / "test" / "dataset.json").unlink()], "test/"),  # a split without dataset.json
    (lambda d: [(d / "sudoku").mkdir(), make_dataset(d / "sudoku"), (d / "maze").mkdir()], "maze/, sudoku/"),  # data/
    (lambda d: [(d / "identifiers.json").write_text("[]")], "identifiers.json"),  # no split: not a dataset
    (lambda d: [(d / f"f{i}").write_text("") for i in range(7)], "f0, f1, f2, f3, f4 and 2 more"),
])
def test_a_folder_that_is_not_a_dataset_is_refused_untouched(tmp_path, make, shown):
    out = tmp_path / "out"
    out.mkdir()
    make(out)
    before = tree(out)
    message = f"--output-dir {out} holds files that are not a dataset ({shown}): choose an empty or new folder"
    with pytest.raises(OptionError) as e:
        check_output_dir(str(out))
    assert str(e.value) == message and e.value.exit_status == 2
    with pytest.raises(OptionError, match="holds files that are not a dataset"):
        with atomic_output_dir(str(out)):
            pytest.fail("a refused folder must not get a build")
    assert tree(out) == before and os.listdir(tmp_path) == ["out"]


def test_new_empty_and_dataset_folders_are_replaced(tmp_path):
    for folder in (tmp_path / "new", tmp_path / "empty", make_dataset(tmp_path / "arc", "test_puzzles.json"),
                   make_dataset(tmp_path / "domino", "domino.json")):
        if folder.name == "empty":
            folder.mkdir()
        check_output_dir(str(folder))
        with atomic_output_dir(str(folder)) as tmp:
            save_identifiers(tmp, ["<blank>"])
        assert os.listdir(folder) == ["identifiers.json"]


def test_files_added_during_the_build_are_kept(tmp_path):
    out = make_dataset(tmp_path / "ds")
    with pytest.raises(OptionError, match=r"\(notes.txt\)"):
        with atomic_output_dir(str(out)) as tmp:
            save_identifiers(tmp, ["<blank>", "new"])
            (out / "notes.txt").write_text("written while the build ran")
    assert (out / "notes.txt").exists() and json.loads((out / "identifiers.json").read_text()) == ["<blank>"]
    assert sorted(os.listdir(tmp_path)) == ["ds"]


def test_an_input_inside_the_output_folder_is_refused(tmp_path):
    out = make_dataset(tmp_path / "ds")
    check_output_dir(str(out), [("--train", str(tmp_path / "train.jsonl")), ("--test", None)])  # beside it: fine
    check_output_dir(str(tmp_path / "ds-new"), [("--source-repo", str(tmp_path))])  # output inside the input: fine
    for path in (out / "train" / "dataset.json", out, tmp_path / "link"):
        if path.name == "link":
            path.symlink_to(out)  # the same folder by another name
        with pytest.raises(OptionError) as e:
            check_output_dir(str(out), [("--source-repo", str(path))])
        assert str(e.value) == (f"--source-repo {path} is inside --output-dir {out}, which the build replaces as "
                                "a whole: choose another output folder")


# ----------------------------------------------------------------------------------------------
# CSV reader and sources

def test_puzzle_csv_fields_ratings_and_line_endings(tmp_path):
    body = "source,question,answer,rating\ns1,ab.,abc,7\ns2,..c,abc,12\n\n"
    quoted = 'source,question,answer,rating\n"s1","ab.",abc,7\ns2,..c,"abc",12\n'
    # A byte-order mark (Windows editors write one) before the header is dropped with it.
    for name, text in [("unix.csv", body), ("dos.csv", body.replace("\n", "\r\n")), ("quoted.csv", quoted),
                       ("bom.csv", "\ufeff" + body), ("bom-dos.csv", "\ufeff" + body.replace("\n", "\r\n")),
                       ("bom-quoted.csv", "\ufeff" + quoted)]:
        path = tmp_path / name
        path.write_bytes(text.encode())
        table = PuzzleCSV(str(path))
        assert len(table) == 2
        assert table.fixed_width("question", np.arange(2), 3).tobytes() == b"ab...c"
        assert table.fixed_width("answer", np.array([1]), 3).tobytes() == b"abc"
        np.testing.assert_array_equal(table.ratings(), [7, 12])
        np.testing.assert_array_equal(table.line_numbers, [2, 3])


@pytest.mark.parametrize("text, message", [
    ("source,question,answer,rating\ns,abc,abc,1\ns,abc,abc\n", "line 3: expected 4 comma-separated fields"),
    ("source,question,answer,rating\ns,abc,abc,x1\n", "line 2: rating 'x1' is not a non-negative integer"),
    ("", "empty file"),
])
def test_puzzle_csv_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        PuzzleCSV(str(path)).ratings()
    with pytest.raises(DatasetError, match="cannot read"):
        PuzzleCSV(str(tmp_path / "missing.csv"))


def test_check_width_names_the_line(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("h\ns,abc,abc,1\ns,abcd,abc,1\n")
    with pytest.raises(DatasetError, match=r"w.csv: line 3: question has 4 characters, expected 3"):
        PuzzleCSV(str(path)).check_width("question", 3)


def test_resolve_source_csv_local_folder(tmp_path):
    (tmp_path / "train.csv").write_text("x")
    assert resolve_source_csv(str(tmp_path), "train") == os.path.join(str(tmp_path), "train.csv")
    with pytest.raises(DatasetError, match="test.csv: missing"):
        resolve_source_csv(str(tmp_path), "test")


def test_subsample_rows_is_seeded_and_without_replacement():
    a = subsample_rows(100, 10, np.random.default_rng(3))
    b = subsample_rows(100, 10, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 10
    np.testing.assert_array_equal(subsample_rows(5, 10, np.random.default_rng(0)), np.arange(5))
    np.testing.assert_array_equal(subsample_rows(5, None, np.random.default_rng(0)), np.arange(5))


def test_run_cli_turns_dataset_errors_into_one_line(capsys):
    def failing(argv):
        raise DatasetError("some/file.csv: line 3: bad")
    with pytest.raises(SystemExit) as e:
        run_cli(failing, [])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: some/file.csv: line 3: bad\n"


@pytest.mark.slow
def test_hugging_face_failure_says_how_to_work_offline(tmp_path):
    # HF_HUB_OFFLINE makes the hub client fail at once instead of trying the network.
    code = ("from dataset.common import resolve_source_csv, run_cli\n"
            "run_cli(lambda argv: resolve_source_csv('sapientinc/no-such-repo-for-tests', 'train'))\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.startswith("error: --source-repo sapientinc/no-such-repo-for-tests: not a local folder")
    assert "To work offline" in res.stderr and "Traceback" not in res.stderr


# ----------------------------------------------------------------------------------------------
# Builder skeleton: options, task key, empty fields, stale folders, full disk

class _ToyConfig(pydantic.BaseModel):
    output_dir: str = pydantic.Field("data/toy", description="where")
    num_aug: int = pydantic.Field(0, ge=0, description="copies")
    grid: Literal[4, 9] = 9
    names: Optional[List[str]] = None
    aug: bool = False


def test_parse_config_makes_the_options_and_validates_them_once():
    config = parse_config(_ToyConfig, ["--num_aug", "3", "--grid", "4", "--names", "a", "b", "--aug"])
    assert config == _ToyConfig(num_aug=3, grid=4, names=["a", "b"], aug=True)
    assert parse_config(_ToyConfig, []) == _ToyConfig()
    with pytest.raises(OptionError, match=r"^--num-aug must be non-negative \(got -1\)$") as e:
        parse_config(_ToyConfig, ["--num-aug", "-1"])
    assert e.value.exit_status == 2
    with pytest.raises(OptionError, match=r"^--grid: invalid choice: 5 \(choose from 4 or 9\)$"):
        parse_config(_ToyConfig, ["--grid", "5"])


def test_run_cli_gives_status_2_for_a_refused_option(capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(lambda argv: parse_config(_ToyConfig, argv), ["--num-aug", "-2"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: --num-aug must be non-negative (got -2)\n"


def test_save_split_records_the_task_and_old_metadata_still_loads(tmp_path):
    inputs = np.arange(12, dtype=np.uint8).reshape(4, 3)
    save_split(str(tmp_path / "train"), inputs, inputs, group_size=2, vocab_size=12, task="toy")
    meta = json.loads((tmp_path / "train" / "dataset.json").read_text())
    assert meta["task"] == "toy" and meta["total_groups"] == 2 and meta["total_puzzles"] == 4
    np.testing.assert_array_equal(np.load(tmp_path / "train" / "all__group_indices.npy"), [0, 2, 4])
    # Without a task (the original's files) the key is neither required nor written.
    del meta["task"]
    (tmp_path / "train" / "dataset.json").write_text(json.dumps(meta))
    loaded = load_metadata(str(tmp_path / "train"))
    assert loaded.task is None
    save_metadata(str(tmp_path / "again"), loaded)
    assert json.loads((tmp_path / "again" / "dataset.json").read_text()) == meta


def test_empty_csv_fields(tmp_path):
    path = tmp_path / "e.csv"
    # An empty source is fine (the original never reads it); an empty question is named by line.
    path.write_text("source,question,answer,rating\n,abc,abc,1\ns,,abc,2\n")
    table = PuzzleCSV(str(path))
    assert table.fixed_width("question", np.array([0]), 3).tobytes() == b"abc"
    with pytest.raises(DatasetError, match=r"e.csv: line 3: the question field is empty$"):
        table.check_nonempty("question", "answer")


def test_npy_file_is_filled_by_row_ranges(tmp_path):
    path = str(tmp_path / "a.npy")
    with NpyFile(path, (5, 3), np.uint8) as f:
        f.write_rows(2, np.arange(9).reshape(3, 3))  # any order
        f.write_rows(0, np.arange(6).reshape(2, 3))
        with pytest.raises(ValueError, match="do not fit"):
            f.write_rows(4, np.zeros((2, 3)))
    np.testing.assert_array_equal(np.load(path), np.concatenate([np.arange(6), np.arange(9)]).reshape(5, 3))


def test_stale_build_folders_are_removed_and_running_ones_kept(tmp_path, capsys):
    stale = tmp_path / ".ds.tmp-ab12_xyz"  # what a killed build leaves: nobody holds its lock
    stale.mkdir()
    (stale / "all__inputs.npy").write_bytes(b"x" * 100)
    running = tmp_path / ".other.tmp-q7w8e9r0"
    running.mkdir()
    keep = [tmp_path / ".ds.tmp-short", tmp_path / "ds.tmp-abcd1234", tmp_path / ".ds.old-abcd1234"]
    for path in keep:
        path.mkdir()
    fd = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a build in progress holds it
        with atomic_output_dir(str(tmp_path / "ds")) as tmp:
            (Path(tmp) / "f").write_text("new")
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == sorted([p.name for p in keep] + [running.name, "ds"])
    assert f"removed {stale} (left by an interrupted build)" in capsys.readouterr().out


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs mounted for the test (needs root; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow  # runs mount and umount
def test_full_disk_is_one_line_and_keeps_the_previous_dataset(small_disk, capsys):
    from dataset.build_sudoku_dataset import main
    src = small_disk.parent / "src"
    src.mkdir()
    q = ".........376..9.2....54....4.2.3..816.............47.9...9.....94.....3.8......16"
    a = "254367198376189425189542673492736581617895342538214769763921854941658237825473916"
    for split in ("train", "test"):
        (src / f"{split}.csv").write_text(f"source,question,answer,rating\ns,{q},{a},0\n")
    out = small_disk / "ds"
    run_cli(main, ["--source-repo", str(src), "--output-dir", str(out)])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    # 20001 copies of 81 cells, inputs and labels: about 3.5 MB, refused before writing
    with pytest.raises(SystemExit) as e:
        run_cli(main, ["--source-repo", str(src), "--output-dir", str(out), "--num-aug", "20000"])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"error: no space left on device (needed about 4 MB in {small_disk})\n"
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # A disk that fills up during the build (no estimate; np.save, and the space NpyFile reserves)
    for write in (lambda tmp: np.save(os.path.join(tmp, "a.npy"), np.zeros(3 * 10 ** 6, np.uint8)),
                  lambda tmp: NpyFile(os.path.join(tmp, "b.npy"), (3000, 1000), np.uint8).close()):
        with pytest.raises(DatasetError, match=rf"^no space left on device \(needed about \d+ MB in {small_disk}\)$"):
            with atomic_output_dir(str(out)) as tmp:
                write(tmp)
        assert sorted(os.listdir(small_disk)) == ["ds"]
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("task", ["sudoku", "maze", "arc", "custom", "domino"])
def test_builder_help_cites_no_internal_documents(task, capsys):
    main = __import__(f"dataset.build_{task}_dataset", fromlist=["main"]).main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--output-dir" in out and not INTERNAL_REFERENCE.search(out)  # the docs are the reference
