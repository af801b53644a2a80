"""scripts/inspect_dataset.py: maze, ARC and custom datasets printed and every example checked; the
first bad example is named with exit status 2."""
import json
import shutil

import numpy as np
import pytest

from conftest import REFERENCE
from dataset.common import PuzzleDatasetMetadata, run_cli, save_metadata, save_set
from scripts.inspect_dataset import main


def inspect(capsys, *args):
    with pytest.raises(SystemExit) as e:
        run_cli(main, list(args))
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_maze_paths_checked(tmp_path, capsys):
    src = REFERENCE / "datasets" / "maze"
    if not src.is_dir():
        pytest.skip(f"reference fixtures not found at {src}")
    folder = tmp_path / "maze"
    shutil.copytree(src, folder)
    status, out, err = inspect(capsys, "--data-path", str(folder), "--num", "1")
    assert status == 2 and "records no task" in err and "--task" in err  # the original builder writes none
    status, out, err = inspect(capsys, "--data-path", str(folder), "--num", "1", "--task", "maze")
    assert status == 0, err
    labels = np.load(folder / "train" / "all__labels.npy")
    assert "checked 24 examples of train: every label marks a shortest path from S to G" in out
    assert out.count("S") >= 2 and "o" in out  # the maze and its path, side by side
    bad = labels.copy()
    at = int(np.flatnonzero(bad[3] == 5)[0])
    bad[3, at] = 2  # a path cell left open: the path no longer connects S to G
    np.save(folder / "train" / "all__labels.npy", bad)
    status, out, err = inspect(capsys, "--data-path", str(folder), "--task", "maze", "--num", "0")
    assert status == 2 and "all__labels.npy: example 3: " in err and "path" in err and err.count("\n") == 1


def write_split(folder, task, inputs, labels, vocab_size, **extra):
    save_set(str(folder / "train"), "all", {"inputs": inputs, "labels": labels, "puzzle_identifiers": np.zeros(len(inputs), np.int32),
                                            "puzzle_indices": np.arange(len(inputs) + 1, dtype=np.int32),
                                            "group_indices": np.arange(len(inputs) + 1, dtype=np.int32)})
    save_metadata(str(folder / "train"), PuzzleDatasetMetadata(
        pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab_size, seq_len=inputs.shape[1], num_puzzle_identifiers=1,
        total_groups=len(inputs), mean_puzzle_examples=1.0, sets=["all"], task=task))
    if extra:
        meta = json.loads((folder / "train" / "dataset.json").read_text())
        (folder / "train" / "dataset.json").write_text(json.dumps({**meta, **extra}))


def test_arc_grids_printed_and_an_empty_label_named(tmp_path, capsys):
    from tasks.arc import ARCCodec
    codec = ARCCodec()
    grids = [np.array([[1, 2], [3, 4]]), np.array([[0, 5, 5]])]
    inputs = np.stack([codec.encode(g) for g in grids]).astype(np.uint8)
    labels = np.stack([codec.encode(g[::-1]) for g in grids]).astype(np.uint8)
    write_split(tmp_path / "arc", "arc", inputs, labels, 12)
    status, out, err = inspect(capsys, "--data-path", str(tmp_path / "arc"), "--num", "2")
    assert status == 0, err
    assert "input 2x2:\n    12\n    34\n  output 2x2:\n    34\n    12" in out and "input 1x3:\n    055" in out
    assert "checked 2 examples of train" in out
    labels[1] = 0
    write_split(tmp_path / "arc", "arc", inputs, labels, 12)
    status, out, err = inspect(capsys, "--data-path", str(tmp_path / "arc"), "--num", "0")
    assert status == 2 and "example 1: the label holds no grid" in err


def test_arc_on_a_fitted_canvas_printed_from_the_builder(tmp_path, capsys):
    """1xN grids on the 2x13 canvas the builder fits to them: each printed grid is a task file's."""
    from conftest import arc_task_folder, build_arc
    tasks = arc_task_folder(tmp_path / "tasks", "1d")
    data = build_arc(tasks, tmp_path / "data", num_aug=0)
    status, out, err = inspect(capsys, "--data-path", str(data), "--split", "test", "--num", "4")
    assert status == 0, err
    pairs = [p for f in sorted(tasks.glob("*.json")) for p in json.loads(f.read_text())["test"]]
    for pair in pairs:
        row = "".join(str(v) for v in pair["output"][0])
        assert f"output 1x{len(row)}:\n    {row}\n" in out
    assert "checked 4 examples of test" in out


def test_custom_task_in_its_own_notation(tmp_path, capsys):
    from dataset.build_custom_dataset import CustomBuildConfig, build_custom_dataset
    data = tmp_path / "train.jsonl"
    data.write_text('{"input": "cab", "output": "abc"}\n{"input": "ba", "output": "ab"}\n')
    build_custom_dataset(CustomBuildConfig(train=str(data), test=str(data), output_dir=str(tmp_path / "sort")))
    status, out, err = inspect(capsys, "--data-path", str(tmp_path / "sort"), "--num", "2")
    assert status == 0, err
    assert "  input:  cab\n  output: \"abc\"" in out and "  input:  ba\n" in out and "checked 2 examples of train" in out
    inputs = np.load(tmp_path / "sort" / "train" / "all__inputs.npy")
    inputs[1, 0] = 0  # padding where the value starts: tokens after it
    np.save(tmp_path / "sort" / "train" / "all__inputs.npy", inputs)
    status, out, err = inspect(capsys, "--data-path", str(tmp_path / "sort"), "--num", "0")
    assert status == 2 and "example 1: the input row is not a laid-out value" in err
