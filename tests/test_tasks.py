"""Task notations (tasks/): round trips on real builder outputs of every task, independent answer
checks, and one clear message per bad puzzle (naming the line of a file)."""
import json

import numpy as np
import pytest

from conftest import build_sudoku, load_split
from tasks import CODECS, get_codec, register
from tasks.base import PuzzleError, TaskCodec


def test_registry_has_every_builder_task_and_takes_new_ones():
    assert {"sudoku", "maze", "arc", "domino"} <= set(CODECS)

    @register
    class Numbers(TaskCodec):  # a later task joins by registering one class
        name = "numbers-test"

    try:
        assert get_codec("numbers-test") is Numbers
    finally:
        del CODECS["numbers-test"]
    with pytest.raises(ValueError, match="unknown task 'nope'; known tasks: arc, custom, domino, maze, sudoku"):
        get_codec("nope")


# ---- round trips: builder tokens -> text -> tokens (and back to the same text)

def roundtrip(codec, tokens):
    text = codec.format_tokens(tokens)
    (puzzle,) = codec.read(text)
    again = codec.rows(puzzle)[0].inputs
    np.testing.assert_array_equal(again, tokens, err_msg=text)
    assert codec.format_tokens(again) == text


@pytest.mark.parametrize("grid", [4, 6])
def test_sudoku_roundtrip_on_built_dataset(tmp_path, grid):
    data = build_sudoku(tmp_path / "s", grid=grid, n_train=6, n_test=3, num_aug=1)
    codec = get_codec("sudoku")(seq_len=grid * grid)
    split = load_split(data, "train")
    for x, y in zip(split["inputs"], split["labels"]):
        roundtrip(codec, x)
        (puzzle,) = codec.read(codec.format_tokens(x) + "," + codec.answer(codec.read(codec.format_tokens(x))[0], y))
        assert codec.problem(puzzle, y) is None  # the builder's solution is valid and keeps every clue
        assert codec.rows(puzzle)[0].labels.tolist() == y.tolist()
        wrong = y.copy()
        clue = int(np.flatnonzero(x > 1)[0])
        wrong[clue] = 2 + (wrong[clue] - 1) % grid  # another digit on a clue
        assert "contradicts the clue" in codec.problem(puzzle, wrong)


def test_sudoku_reads_the_inspectors_grid():
    from scripts.inspect_sudoku_dataset import format_grid
    codec = get_codec("sudoku")(seq_len=16)
    digits = np.array([1, 0, 0, 0, 0, 0, 2, 0, 0, 3, 0, 0, 0, 0, 0, 4])
    (puzzle,) = codec.read(format_grid(digits, 4))
    assert puzzle.data.tolist() == digits.tolist()


def test_maze_roundtrip_on_built_dataset(tmp_path):
    from dataset.build_maze_dataset import MazeBuildConfig, build_maze_dataset
    build_maze_dataset(MazeBuildConfig(generate=4, generate_test=1, size=9, output_dir=str(tmp_path / "m")))
    split = load_split(tmp_path / "m", "train")
    codec = get_codec("maze")(seq_len=81)
    for x, y in zip(split["inputs"], split["labels"]):
        roundtrip(codec, x)
        (solved,) = codec.read(codec.answer(None, y))  # a maze with its path marked: the path is the truth
        np.testing.assert_array_equal(codec.rows(solved)[0].inputs, x)
        np.testing.assert_array_equal(codec.rows(solved)[0].labels, y)
        assert codec.problem(solved, y) is None
        assert "path cells marked" in codec.problem(solved, x)  # no path is not a solution
    # Several mazes in one file, separated by blank lines, with their line numbers.
    text = "\n\n".join(codec.format_tokens(x) for x in split["inputs"][:3]) + "\n"
    assert [p.where for p in codec.read(text, "mazes.txt")] == ["mazes.txt line 1", "mazes.txt line 11", "mazes.txt line 21"]


def one_segment(tokens):
    from tasks.base import RowOutput
    return RowOutput(preds=np.asarray(tokens)[None], q_halt_logits=np.zeros(1, np.float32), q_halt=np.full(1, 0.5), halt_step=None)


def test_sudoku_answer_keeps_the_clues_and_raw_answer_is_the_model_output():
    codec = get_codec("sudoku")(seq_len=16)
    (puzzle,) = codec.read("..2..1..32......,4321214332141432")
    digits = lambda text: codec.encode(np.array([int(c) for c in text]))  # noqa: E731
    # A half-trained model's output that overwrites the clue 2 at cell 3 (row 1, column 3) with a 1.
    result = codec.result(puzzle, codec.rows(puzzle), [one_segment(digits("4311212232411412"))], trace=True)
    assert result["raw_answer"] == "4311212232411412" and result["answer"] == "4321212232411412"
    assert result["valid"] is False and "repeats a digit" in result["problem"]  # judged on the answer: no clue contradicted
    assert result["correct"] is False and result["trace"][0]["raw_answer"] == result["raw_answer"]
    # Right everywhere but on that clue: the answer is the solution.
    right = codec.result(puzzle, codec.rows(puzzle), [one_segment(digits("4311214332141432"))], trace=False)
    assert right["answer"] == "4321214332141432" and right["valid"] and right["correct"]


def test_maze_answer_keeps_walls_start_and_goal():
    codec = get_codec("maze")(seq_len=9)
    (puzzle,) = codec.read("S #\n  #\nG #")
    raw = puzzle.data.copy()
    raw[2] = 2          # the model opened a wall ...
    raw[3] = 5          # ... and marked the one path cell
    raw[6] = 5          # ... over the goal
    result = codec.result(puzzle, codec.rows(puzzle), [one_segment(raw)], trace=False)
    assert result["raw_answer"] == "S  \no #\no #" and result["answer"] == "S #\no #\nG #"
    assert result["valid"] is True


def test_domino_roundtrip_on_built_dataset(tmp_path):
    from dataset.build_domino_dataset import DominoDatasetConfig, build
    build(DominoDatasetConfig(output_dir=str(tmp_path / "d"), num_games=20, seed=3))
    split = load_split(tmp_path / "d", "train")
    codec = get_codec("domino")(seq_len=72, data_path=str(tmp_path / "d"))
    assert codec.policy == "max-chain"
    for x, y in zip(split["inputs"], split["labels"]):
        roundtrip(codec, x)
        (puzzle,) = codec.read(codec.format_tokens(x))
        np.testing.assert_array_equal(codec.rows(puzzle)[0].labels, y)  # the truth is the policy's move
        assert codec.problem(puzzle, y) is None
    (puzzle,) = codec.read("table: [0|3][3|4][4|0] hand: [0|6] [3|6]")
    assert codec.answer(puzzle, np.array([1, 7, 1] + [0] * 69)) == "[0|6] left"
    assert codec.problem(puzzle, np.array([1, 7, 1] + [0] * 69)) is None
    assert codec.problem(puzzle, np.array([4, 7, 2] + [0] * 69)) == "illegal: [3|6] cannot be played right"
    assert codec.problem(puzzle, np.array([2, 3, 1] + [0] * 69)) == "illegal: [1|2] is not in the hand"
    # The inspector's printed form reads too (counts and ends are checked against the chain).
    assert codec.read("table (3): [0|3][3|4][4|0]   ends: 0 0 hand  (2): [0|6] [3|6]")[0].data == puzzle.data


def test_arc_roundtrip_on_built_dataset(tmp_path):
    from dataset.arc_grid import crop_arc_grid
    from dataset.build_arc_dataset import ARCBuildConfig, build_arc_dataset
    rng = np.random.default_rng(0)

    def pair(h, w):
        x = rng.integers(0, 10, size=(h, w))
        return {"input": x.tolist(), "output": np.fliplr(x).tolist()}

    raw = tmp_path / "raw"
    for subset in ("training", "evaluation"):
        (raw / subset).mkdir(parents=True)
        (raw / subset / f"{subset}_task.json").write_text(json.dumps({"train": [pair(3, 4), pair(5, 2)], "test": [pair(4, 4)]}))
    build_arc_dataset(ARCBuildConfig(dataset_dirs=[str(raw)], output_dir=str(tmp_path / "a"), num_aug=2))
    codec = get_codec("arc")(seq_len=900, data_path=str(tmp_path / "a"))
    test = load_split(tmp_path / "a", "test")
    for x in test["inputs"]:  # the test split is untranslated: grid -> tokens -> grid is exact
        np.testing.assert_array_equal(codec.encode(crop_arc_grid(x)), x)
        assert codec.format_tokens(codec.encode(crop_arc_grid(x))) == codec.format_tokens(x)
    # The task JSON read back gives exactly the builder's test rows, version by version.
    task = json.loads((raw / "evaluation" / "evaluation_task.json").read_text())
    (puzzle,) = codec.read(json.dumps(task), str(tmp_path / "evaluation_task.json"))
    puzzle.data.versions = codec.known_versions("evaluation_task")
    assert len(puzzle.data.versions) == 3
    rows = codec.rows(puzzle)
    ids = test["puzzle_identifiers"][np.searchsorted(test["puzzle_indices"], np.arange(len(test["inputs"])), side="right") - 1]
    ours = {(r.identifier, r.inputs.tobytes(), r.labels.tobytes()) for r in rows}
    theirs = {(int(i), x.astype(np.int32).tobytes(), y.astype(np.int32).tobytes()) for i, x, y in zip(ids, test["inputs"], test["labels"])}
    assert ours == theirs
    # An unseen task's versions are planned as the builder plans them (same names).
    assert codec.planned_versions(puzzle, 2) == [n for n, _ in puzzle.data.versions]


# ---- bad puzzles: one message each, naming the puzzle

@pytest.mark.parametrize("task, seq_len, text, message", [
    ("sudoku", 16, "1234", "puzzle has 4 cells; this checkpoint's 4x4 Sudoku needs 16"),
    ("sudoku", None, "123456789012", "puzzle has 12 cells: not a square Sudoku grid"),
    ("sudoku", 16, "12x4............", "character 'x' at cell 3 is not a digit 1..4 or a blank"),
    ("sudoku", 16, "12.5............", "character '5' at cell 4 is not a digit 1..4"),
    ("sudoku", 16, "6" + "." * 80, "puzzle has 81 cells; this checkpoint's 4x4 Sudoku needs 16"),  # a 9x9 Sudoku
    ("sudoku", 16, "1..1............", "the clues conflict: digit 1 twice in row 1"),
    ("maze", 25, "#####\n#S S#\n# # #\n#  G#\n#####", "a maze needs exactly one start 'S', found 2"),
    ("maze", 25, "#####\n#S  #\n# # \n#  G#\n#####", "ragged rows: row 1 has 5 characters, row 3 has 4"),
    ("maze", 25, "#####\n#S  #\n# x #\n#  G#\n#####", "character 'x' at row 3, column 3 is not in the maze charset"),
    ("maze", 36, "#####\n#S  #\n# # #\n#  G#\n#####", "maze is 5x5; this checkpoint's mazes are 6x6"),
    ("domino", 72, "table: [0|3][4|5] hand: [1|1]", "table tiles 0 (0, 3) and 1 (4, 5) do not match"),
    ("domino", 72, "table: [0|7] hand: [1|1]", "table: tile [0|7] has a pip outside 0..6"),
    ("domino", 72, "table: [0|3] hand: [0|3]", "a tile appears twice on the table and in the hand"),
    ("domino", 72, "0,3 1,1", "expected 'table: [a|b][b|c]... hand:"),
    ("arc", 900, json.dumps({"train": [{"input": [[0] * 31] * 31, "output": [[1]]}], "test": [{"input": [[1]]}]}),
     "task puzzle: train[0].input: grid is 31x31, larger than 30x30"),
    ("arc", 900, json.dumps({"train": [{"input": [[0, 1], [2]], "output": [[1]]}], "test": [{"input": [[1]]}]}),
     "task puzzle: train[0].input: rows of different lengths"),
    ("arc", 900, json.dumps({"train": [{"input": [[0, 10]], "output": [[1]]}], "test": [{"input": [[1]]}]}),
     "task puzzle: train[0].input: colours must be integers 0..9"),
])
def test_bad_puzzles_are_one_clear_line(task, seq_len, text, message):
    codec = get_codec(task)(seq_len=seq_len)
    with pytest.raises(PuzzleError) as e:
        codec.read(text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_errors_in_a_file_name_its_line():
    codec = get_codec("sudoku")(seq_len=16)
    with pytest.raises(PuzzleError, match=r"^p\.txt line 3: puzzle has 15 cells"):
        codec.read("1...............\n\n1..............\n", "p.txt")


def test_arc_codec_on_a_fitted_canvas(tmp_path):
    """A 1-D dataset on its 2 x 11 canvas: the codec reads the canvas from dataset.json, encodes a task
    as the builder's test rows, and its views (flips and colour maps) map answers back."""
    from dataset.build_arc_dataset import ARCBuildConfig, build_arc_dataset
    raw = tmp_path / "raw" / "cat"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def pair():
        x = rng.integers(0, 4, size=(1, int(rng.integers(3, 11))))
        return {"input": x.tolist(), "output": x[:, ::-1].tolist()}

    for k in range(2):
        (raw / f"t{k}.json").write_text(json.dumps({"train": [pair(), pair()], "test": [pair()]}))
    build_arc_dataset(ARCBuildConfig(dataset_dirs=[str(raw.parent)], output_dir=str(tmp_path / "a"), num_aug=5,
                                     canvas="fit", protocol="hrm"))
    test = load_split(tmp_path / "a", "test")
    codec = get_codec("arc")(seq_len=test["inputs"].shape[1], data_path=str(tmp_path / "a"))
    assert (codec.canvas.height, codec.canvas.width) == (2, 11) and codec.check_shapes(22, 12) is None
    assert "2x11 canvas has seq_len 22" in codec.check_shapes(900, 12)
    (puzzle,) = codec.read((raw / "t1.json").read_text(), str(raw / "t1.json"))
    puzzle.data.versions = codec.known_versions("t1")
    rows = codec.rows(puzzle)
    ids = test["puzzle_identifiers"][np.searchsorted(test["puzzle_indices"], np.arange(len(test["inputs"])), side="right") - 1]
    theirs = {(int(i), x.astype(np.int32).tobytes()) for i, x in zip(ids, test["inputs"])}
    assert {(r.identifier, r.inputs.tobytes()) for r in rows} <= theirs
    grid = np.array(json.loads((raw / "t1.json").read_text())["test"][0]["input"])
    assert codec.format_tokens(codec.encode(grid)) == json.dumps(grid.tolist())
    inputs = np.stack([r.inputs for r in rows])
    views = codec.views(inputs, 4, identifiers=np.array([r.identifier for r in rows]))
    forward = views.forward(inputs)
    row_of = {r.identifier: r.inputs for r in rows}
    for b, v in np.ndindex(*views.shape):  # a view of a row is the builder's row of that version
        np.testing.assert_array_equal(forward[b, v], row_of[int(views.identifiers[b, v])])
    assert len({x.tobytes() for x in forward.reshape(-1, 22)}) > 1
    np.testing.assert_array_equal(views.back(forward), np.broadcast_to(inputs[:, None], forward.shape))
