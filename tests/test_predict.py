"""predict.py on real checkpoints: evaluate.py's predictions exactly, the recorded or given task,
pictures, ARC voting as the evaluator votes, test-time adaptation to ARC tasks (new ones and the checkpoint's own),
and one clear line (exit 2, nothing written) for every bad input."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import predict
from conftest import TINY_HRM, build_custom, load_split, train_in_process, untrained_checkpoint
from inference.predictor import describe, load_predictor
from tasks.sudoku import first_problem


@pytest.fixture(scope="module")
def sudoku_ck(trained_hrm, tmp_path_factory):
    """A copy of the shared tiny HRM's folder (evaluate.py writes its outputs beside the checkpoint)."""
    folder = tmp_path_factory.mktemp("predict") / "ck"
    shutil.copytree(trained_hrm[0], folder)
    return folder / "step_12"


def data_path_of(checkpoint):
    import yaml
    return yaml.safe_load(open(os.path.join(os.path.dirname(checkpoint), "all_config.yaml")))["data_path"]


def cli(capsys, *args):
    """Run predict.py's main in-process; (exit status, stdout, stderr)."""
    try:
        predict.main([str(a) for a in args])
        status = 0
    except SystemExit as e:
        status = e.code
    out = capsys.readouterr()
    return status, out.out, out.err


def test_same_predictions_as_evaluate(sudoku_ck, tmp_path, capsys):
    import evaluate
    evaluate.run(evaluate.EvalConfig(checkpoint=str(sudoku_ck), save_outputs=["inputs", "preds"]))
    saved = torch.load(f"{sudoku_ck}_all_preds.0", weights_only=True)
    test = load_split(data_path_of(sudoku_ck), "test")
    np.testing.assert_array_equal(saved["inputs"].numpy(), test["inputs"])

    puzzles = tmp_path / "puzzles.txt"
    codec = load_predictor(str(sudoku_ck), task="sudoku").codec
    puzzles.write_text("".join(codec.format_tokens(x) + "\n" for x in test["inputs"]))
    status, out, err = cli(capsys, f"checkpoint={sudoku_ck}", f"puzzle_file={puzzles}", "task=sudoku", f"output={tmp_path / 'a.json'}")
    assert status == 0, err
    results = json.loads((tmp_path / "a.json").read_text())["results"]
    assert [r["puzzle"] for r in results[:2]] == [f"{puzzles} line 1", f"{puzzles} line 2"]
    expected = [codec.answer(None, p) for p in saved["preds"].numpy()]  # type: ignore[arg-type]
    assert [r["raw_answer"] for r in results] == expected  # the model's own output is evaluate.py's prediction
    overwritten = 0
    for r, x in zip(results, test["inputs"]):
        assert r["segments_run"] == 3 and 0 < r["halt_confidence"] < 1 and r["steps"] <= 3
        # The answer keeps every clue; elsewhere it is the model's output.
        clues = np.flatnonzero(x > 1)
        assert all(r["answer"][i] == str(x[i] - 1) for i in clues)
        assert all(a == b for i, (a, b) in enumerate(zip(r["answer"], r["raw_answer"])) if i not in set(clues))
        overwritten += r["answer"] != r["raw_answer"]
        # valid / correct judge the answer with its clues kept (the independent checker).
        problem = first_problem(x - 1, np.array([int(c) if c != "." else -1 for c in r["answer"]]), 4)
        assert r["valid"] == (problem is None) and r.get("problem") == problem
    assert overwritten, "the half-trained checkpoint should overwrite a clue somewhere (else this test checks nothing)"


def test_printed_answer_keeps_clues_and_shows_the_raw_output():
    from tasks import get_codec
    from tasks.base import RowOutput
    codec = get_codec("sudoku")(seq_len=16)
    (puzzle,) = codec.read("..2..1..32......")
    raw = codec.encode(np.array([int(c) for c in "4311212232411412"]))  # overwrites the clue 2 at cell 3
    out = RowOutput(preds=raw[None], q_halt_logits=np.zeros(1, np.float32), q_halt=np.full(1, 0.5), halt_step=None)
    text = describe(dict(codec.result(puzzle, codec.rows(puzzle), [out], trace=False), puzzle="puzzle 1"))
    assert text.splitlines()[1] == "  4321212232411412"
    assert text.splitlines()[2].endswith("overwrote given cells (raw_answer, what evaluate.py scores): 4311212232411412")


def test_python_api_trace_and_more_segments(sudoku_ck):
    predictor = load_predictor(str(sudoku_ck), task="sudoku", batch_size=3)
    text = predictor.codec.format_tokens(load_split(data_path_of(sudoku_ck), "test")["inputs"][0])
    (short,) = predictor.predict([text], trace=True)
    assert [e["step"] for e in short["trace"]] == [1, 2, 3] and short["trace"][-1]["answer"] == short["answer"]
    assert short["trace"][0]["changed"] is None and all(isinstance(e["changed"], int) for e in short["trace"][1:])
    (longer,) = predictor.predict([text], halt_max_steps=5, trace=True)
    assert longer["segments_run"] == 5 and longer["trace"][:3] == short["trace"]  # the first segments are the same
    assert predictor.halt_max_steps == 3  # the trained value is restored


def test_trace_confidence_reaches_one_half_first_at_steps(sudoku_ck):
    """The reported halt confidence is the rule the model halts by: in every trace the first segment
    whose confidence is >= 0.5 is ``steps`` when the model halted by itself, and none is when it did not."""
    predictor = load_predictor(str(sudoku_ck), task="sudoku")
    inputs = load_split(data_path_of(sudoku_ck), "test")["inputs"]
    results = predictor.predict([predictor.codec.format_tokens(x) for x in inputs], halt_max_steps=6, trace=True, progress=False)
    halted = 0
    for r in results:
        confident = [e["step"] for e in r["trace"] if e["halt_confidence"] >= 0.5]
        if r["halted"]:
            assert confident and confident[0] == r["steps"], (r["steps"], [e["halt_confidence"] for e in r["trace"]])
            halted += 1
        else:
            assert not confident and r["steps"] == r["segments_run"]
        assert r["halt_confidence"] == r["trace"][-1]["halt_confidence"]
    assert 0 < halted, "the checkpoint should halt by itself on some puzzle (else the test checks half the rule)"


def test_pictures_png_and_gif(sudoku_ck, tmp_path, capsys):
    for name in ("t.png", "t.gif"):
        status, out, err = cli(capsys, f"checkpoint={sudoku_ck}", "puzzle=1.3.3...........,1234341221434321", "task=sudoku",
                               "trace=true", f"picture={tmp_path / name}")
        assert status == 0, err
        assert out.startswith("puzzle 1: 3 segments (")  # a typed puzzle is named, not "puzzle=:"
    png, gif = Image.open(tmp_path / "t.png"), Image.open(tmp_path / "t.gif")
    assert png.format == "PNG" and gif.format == "GIF"
    # 4x4 grid of 28-pixel cells; panels input, 3 segments, truth; 10-pixel gaps and a 30-pixel title.
    panel = 4 * 28
    assert png.size == (10 + 5 * (panel + 10), 10 + 30 + panel + 10)
    assert gif.size == (10 + 3 * (panel + 10), 10 + 30 + panel + 10) and gif.n_frames == 3  # input, segment k, truth


def checkpoint_on_data(sudoku_ck, folder, edit_metadata):
    """A copy of the checkpoint whose config names a copy of its dataset, with dataset.json edited."""
    shutil.copytree(os.path.dirname(sudoku_ck), folder / "ck")
    shutil.copytree(data_path_of(sudoku_ck), folder / "data")
    meta_path = folder / "data" / "train" / "dataset.json"
    meta_path.write_text(json.dumps(edit_metadata(json.loads(meta_path.read_text()))))
    config = (folder / "ck" / "all_config.yaml").read_text().replace(data_path_of(sudoku_ck), str(folder / "data"))
    (folder / "ck" / "all_config.yaml").write_text(config)
    return folder / "ck" / "step_12"


def test_task_from_dataset_json_or_option(sudoku_ck, tmp_path, capsys):
    # Datasets from the original builders do not record their task: predict.py asks for task=.
    legacy = checkpoint_on_data(sudoku_ck, tmp_path / "legacy", lambda m: {k: v for k, v in m.items() if k != "task"})
    status, out, err = cli(capsys, f"checkpoint={legacy}", "puzzle=1...............")
    assert status == 2 and "does not record its task" in err and "task=arc|custom|domino|maze|sudoku" in err
    assert cli(capsys, f"checkpoint={legacy}", "puzzle=1...............", "task=sudoku")[0] == 0
    status, out, err = cli(capsys, f"checkpoint={legacy}", "puzzle=1...............", "task=domino")
    assert status == 2 and "task=domino: does not fit this checkpoint: a domino model has seq_len 72 and vocab 8" in err
    # A dataset that records it needs no option, and a contradicting option is an error.
    recorded = checkpoint_on_data(sudoku_ck, tmp_path / "recorded", lambda m: {**m, "task": "sudoku"})
    status, out, err = cli(capsys, f"checkpoint={recorded}", "puzzle=1...............")
    assert status == 0, err
    status, out, err = cli(capsys, f"checkpoint={recorded}", "puzzle=1...............", "task=maze")
    assert status == 2 and "task=maze: this checkpoint was trained on sudoku puzzles" in err


def test_builder_recorded_task_needs_no_option(sudoku_ck, capsys):
    meta = json.loads(open(os.path.join(data_path_of(sudoku_ck), "train", "dataset.json")).read())
    assert meta["task"] == "sudoku"  # written by the Sudoku builder
    status, out, err = cli(capsys, f"checkpoint={sudoku_ck}", "puzzle=1...............")
    assert status == 0, err


@pytest.mark.parametrize("args, message", [
    (["puzzle=1234"], "puzzle=\"1234\": puzzle has 4 cells; this checkpoint's 4x4 Sudoku needs 16"),
    (["puzzle=12x4............"], "puzzle=\"12x4............\": puzzle: character 'x' at cell 3 is not a digit 1..4"),
    (["puzzle=123412341"], "puzzle has 9 cells; this checkpoint's 4x4 Sudoku needs 16"),
    (["puzzle=11.............."], 'puzzle="11..............": the clues conflict: digit 1 twice in row 1'),
    (["puzzle=#####\n#S  #\n# # #\n#  G#\n#####"], "puzzle: character '#' at cell 1 is not a digit 1..4"),  # a maze for a Sudoku model
    (["puzzle=1...............", "task=domino"], "task=domino: "),  # the recorded task or the sizes contradict it
    (["puzzle=1...............", "task=chess"], "task=chess: unknown task"),
    (["puzzle=1...............", "picture=x.jpg"], "picture=x.jpg: expected a .png or .gif file name"),
    (["puzzle=1...............", "halt_max_steps=0"], "halt_max_steps=0: expected 1 to 1024 ACT segments"),
    ([], "give exactly one of puzzle=<text> or puzzle_file=<path>"),
    (["puzzle_file=FILE"], "FILE line 2: puzzle has 15 cells"),
    (["puzzle=1...............", "halt_max_steps=100000000"], "halt_max_steps=100000000: expected 1 to 1024 ACT segments"),
    (["puzzle_file=BINARY"], "puzzle_file=BINARY: not UTF-8 text (byte 128 is 0x80)"),
    (["puzzle=1...............", "adapt_steps=5"], "adapt_steps=5: only for ARC checkpoints (this one: sudoku)"),
    (["puzzle=1...............", "adapt=full", "adapt_steps=5"], "adapt=full: only for ARC checkpoints (this one: sudoku)"),
    (["puzzle=1...............", "adapt=full"], "adapt=full: give adapt_steps=N"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(sudoku_ck, tmp_path, capsys, args, message):
    puzzles = tmp_path / "p.txt"
    puzzles.write_text("1...............\n1..............\n")
    binary = tmp_path / "b.bin"
    binary.write_bytes(bytes(range(256)))
    args = [a.replace("FILE", str(puzzles)).replace("BINARY", str(binary)) for a in args]
    message = message.replace("BINARY", str(binary))
    if not any(a.startswith("task=") for a in args):
        args.append("task=sudoku")
    status, out, err = cli(capsys, f"checkpoint={sudoku_ck}", *args, f"output={tmp_path / 'o.json'}", f"picture={tmp_path / 'p.png'}"
                           if not any(a.startswith("picture=") for a in args) else "trace=false")
    assert status == 2
    assert err.startswith("error: ") and message.replace("FILE", str(puzzles)) in err and err.count("\n") == 1, err
    assert sorted(os.listdir(tmp_path)) == ["b.bin", "p.txt"]


@pytest.mark.parametrize("outputs, message", [
    (["output=FOLDER"], "output=FOLDER: is a folder; give a file name"),
    (["output=/proc/a.json"], "output=/proc/a.json: cannot write in /proc"),
    (["output=FILE/x.json"], "output=FILE/x.json: FILE is a file, not a folder"),
    (["picture=/proc/a.png"], "picture=/proc/a.png: cannot write in /proc"),
    (["output=NEW", "picture=/proc/a.gif"], "picture=/proc/a.gif: cannot write in /proc"),
])
def test_every_output_location_is_checked_first_and_nothing_written(sudoku_ck, tmp_path, capsys, outputs, message):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    names = {"FOLDER": str(tmp_path / "folder"), "FILE": str(tmp_path / "file.txt"), "NEW": str(tmp_path / "o.json")}
    for key, value in names.items():
        outputs = [o.replace(key, value) for o in outputs]
        message = message.replace(key, value)
    status, out, err = cli(capsys, f"checkpoint={sudoku_ck}", "puzzle=1...............", *outputs)
    assert status == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert out == ""  # stopped before the model ran
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "folder"] and os.listdir(tmp_path / "folder") == []


def test_output_to_a_device_is_written_in_place_and_a_bom_is_read(sudoku_ck, tmp_path, capsys):
    """``output=/dev/null`` (as root too) never replaces the device; a puzzle file saved with a
    UTF-8 byte-order mark (Windows editors) reads as without it."""
    puzzles = tmp_path / "p.txt"
    puzzles.write_bytes("\ufeff1...............\n".encode())
    status, out, err = cli(capsys, f"checkpoint={sudoku_ck}", f"puzzle_file={puzzles}", "output=/dev/null")
    assert status == 0, err
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    assert sorted(os.listdir(tmp_path)) == ["p.txt"]


def test_checkpoint_without_config(sudoku_ck, tmp_path, capsys):
    shutil.copy(sudoku_ck, tmp_path / "step_12")
    status, _, err = cli(capsys, f"checkpoint={tmp_path / 'step_12'}", "puzzle=1...............", "task=sudoku")
    assert status == 2 and "no all_config.yaml next to it" in err and err.count("\n") == 1


# ---- ARC: a tiny model trained in-process (two tasks seen, unseen ones adapted)

def synthetic_task(rng, kind, pairs=3):
    def pair(h, w):
        x = rng.integers(0, 10, size=(h, w))
        return {"input": x.tolist(), "output": (np.fliplr(x) if kind == "flip" else np.where(x == 0, 5, x)).tolist()}
    return {"train": [pair(3, 4), pair(4, 3), pair(2, 5)][:pairs], "test": [pair(3, 3)]}


@pytest.fixture(scope="module")
def arc_ck(tmp_path_factory):
    from dataset.build_arc_dataset import ARCBuildConfig, build_arc_dataset

    root = tmp_path_factory.mktemp("arc")
    rng = np.random.default_rng(1)
    for subset, tasks in {"training": {"t_flip": "flip"}, "evaluation": {"e_flip": "flip", "e_col": "col"}}.items():
        (root / "raw" / subset).mkdir(parents=True)
        for name, kind in tasks.items():
            (root / "raw" / subset / f"{name}.json").write_text(json.dumps(synthetic_task(rng, kind)))
    build_arc_dataset(ARCBuildConfig(dataset_dirs=[str(root / "raw")], output_dir=str(root / "data"), num_aug=2))
    return root, train_in_process(root / "data", root / "ck", "epochs=1", "eval_interval=1", "global_batch_size=8", "lr=3e-3",
                                  "lr_warmup_steps=1", *TINY_HRM, "+run_name=arc")


def test_arc_seen_task_votes_as_the_evaluator(arc_ck, tmp_path, capsys):
    root, ck = arc_ck
    submission = json.loads((root / "ck" / f"evaluator_ARC_{ck.name}" / "submission.json").read_text())
    tasks = json.loads((root / "data" / "test_puzzles.json").read_text())
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))  # Kaggle challenges layout: {name: task}
    status, out, err = cli(capsys, f"checkpoint={ck}", f"puzzle_file={tmp_path / 'tasks.json'}", "batch_size=4",  # task recorded
                           f"output={tmp_path / 'a.json'}")
    assert status == 0, err
    document = json.loads((tmp_path / "a.json").read_text())
    assert document["submission"] == {name: submission[name] for name in tasks}
    assert all(r["versions"] == 3 and set(r["answer"][0]) == {"attempt_1", "attempt_2"} for r in document["results"])


def test_arc_unseen_task_needs_adapt_or_blank(arc_ck, tmp_path, capsys):
    _, ck = arc_ck
    task = tmp_path / "new_task.json"
    task.write_text(json.dumps(synthetic_task(np.random.default_rng(7), "flip", pairs=2)))
    status, _, err = cli(capsys, f"checkpoint={ck}", f"puzzle_file={task}", "task=arc", f"output={tmp_path / 'o.json'}")
    assert status == 2 and "task 'new_task' is not among the" in err and "adapt_steps=N" in err and "unseen=blank" in err
    assert not (tmp_path / "o.json").exists()
    status, out, err = cli(capsys, f"checkpoint={ck}", f"puzzle_file={task}", "task=arc", "unseen=blank", "num_aug=1", "trace=true",
                           f"picture={tmp_path / 'arc.png'}")
    assert status == 0, err
    assert Image.open(tmp_path / "arc.png").size[1] == 10 + 30 + 3 * 28 + 10  # one line: 3x3 grids of 28-pixel cells


def test_arc_adapt_fits_only_new_embedding_rows(arc_ck):
    _, ck = arc_ck
    predictor = load_predictor(str(ck), task="arc", batch_size=4)
    (puzzle,) = predictor.read(json.dumps(synthetic_task(np.random.default_rng(7), "flip", pairs=2)), "new_task.json")
    before = {k: v.clone() for k, v in predictor.model.state_dict().items()}
    rows_before = predictor.metadata.num_puzzle_identifiers
    report = predictor.adapt([puzzle], steps=4, lr=0.05, num_aug=1, progress=False)
    assert report["new_rows"] == 2 and report["loss_after"] < report["loss_before"]
    after = predictor.model.state_dict()
    key = "model.inner.puzzle_emb.weights"
    assert set(after) == set(before)
    for k in before:
        if k != key:
            assert torch.equal(before[k], after[k]), k
    assert after[key].shape[0] == rows_before + 2
    assert torch.equal(after[key][:rows_before], before[key])  # trained rows untouched
    assert not torch.equal(after[key][rows_before:], before[key].mean(0).expand(2, -1))  # new rows moved
    assert [i for _, i in puzzle.data.versions] == [rows_before, rows_before + 1]
    (result,) = predictor.predict([puzzle])
    assert result["task"] == "new_task" and len(result["answer"]) == 1


def test_arc_samples_and_ensembles_answer_as_evaluate(arc_tiny, tmp_path, capsys):
    """samples=N on ARC tasks (5x5 grids, canvas 6x6): the submission evaluate.py samples=N writes;
    an unseen task runs on fresh augmentations with the blank identifier, an adapted one on the
    versions of its new identifiers; two checkpoints of the dataset answer as an ensemble."""
    import evaluate
    from conftest import arc_run_config, untrained_checkpoint
    data, ck = arc_tiny["2d"]
    evaluate.run(evaluate.EvalConfig(checkpoint=str(ck), samples=4, output_dir=str(tmp_path / "eval")))
    submission = json.loads((tmp_path / "eval" / "evaluator_ARC_step_1" / "submission.json").read_text())
    tasks = data / "test_puzzles.json"
    status, out, err = cli(capsys, f"checkpoint={ck}", f"puzzle_file={tasks}", "samples=4", "batch_size=4",
                           f"output={tmp_path / 'a.json'}")
    assert status == 0, err
    document = json.loads((tmp_path / "a.json").read_text())
    assert document["submission"] == submission
    tests = {name: len(task["test"]) for name, task in json.loads(tasks.read_text()).items()}
    for r in document["results"]:  # every version of every test input chose among its 4 samples
        assert r["samples"] == 4 and len(r["chosen_sample"]) == 4 * tests[r["task"]] and 0 < r["agreement"] <= 1
    assert "of 4 samples agree" in out

    new_task = json.dumps(synthetic_task(np.random.default_rng(7), "flip", pairs=2))
    status, out, err = cli(capsys, f"checkpoint={ck}", f"puzzle={new_task}", "task=arc", "unseen=blank", "num_aug=2", "samples=5")
    assert status == 0 and "of 5 samples agree" in out, err
    predictor = load_predictor(str(ck), batch_size=4)
    (puzzle,) = predictor.read(new_task, "new_task.json")
    predictor.adapt([puzzle], steps=2, lr=0.01, num_aug=1, progress=False)
    new_ids = [i for _, i in puzzle.data.versions]
    (result,) = predictor.predict([puzzle], samples=3, progress=False)
    assert result["samples"] == 3 and result["versions"] == 2
    rows = predictor.codec.rows(puzzle)
    views = predictor.codec.views(np.stack([r.inputs for r in rows]), 3, identifiers=np.array([r.identifier for r in rows]))
    assert sorted(set(views.identifiers.ravel().tolist())) == new_ids  # the adapted rows' own versions

    second = untrained_checkpoint(arc_run_config(data), data, tmp_path / "second", seed=1)
    pooled = load_predictor([str(ck), str(second)], batch_size=4).predict([tasks.read_text()], samples=2, progress=False)
    assert all(r["samples"] == 4 for r in pooled)


def test_arc_full_adaptation_trains_every_weight_and_saves_a_checkpoint(arc_ck, tmp_path, capsys):
    root, ck = arc_ck
    tasks = json.loads((root / "data" / "test_puzzles.json").read_text())
    (tmp_path / "tasks.json").write_text(json.dumps({"e_flip": tasks["e_flip"]}))
    digest = open(ck, "rb").read()
    common = [f"puzzle_file={tmp_path / 'tasks.json'}", "batch_size=4"]
    status, _, err = cli(capsys, f"checkpoint={ck}", *common, "adapt=full", "adapt_steps=3", "seed=4",
                         f"adapt_save={tmp_path / 'adapted'}", f"output={tmp_path / 'a.json'}")
    assert status == 0, err
    assert "adapt=full: 3 steps (lr 0.003, batch 4) on 9 demonstration rows of 1 task(s)" in err  # 3 versions x 3 pairs
    assert "exact accuracy" in err and f"saved as {tmp_path / 'adapted' / ck.name}" in err
    adapted = json.loads((tmp_path / "a.json").read_text())
    assert (adapted["adapted"]["mode"], adapted["adapted"]["seed"], adapted["adapted"]["new_rows"]) == ("full", 4, 0)
    assert {"loss_before", "loss_after", "exact_accuracy_before", "exact_accuracy_after"} <= set(adapted["adapted"])
    assert open(ck, "rb").read() == digest  # the checkpoint file is never written
    saved = torch.load(tmp_path / "adapted" / ck.name, weights_only=True)
    trained = torch.load(ck, weights_only=True)
    assert sum(not torch.equal(saved[k], trained[k]) for k in trained) > len(trained) // 2  # every weight learns
    # The saved folder is a checkpoint: it answers as the adapted model did.
    status, _, err = cli(capsys, f"checkpoint={tmp_path / 'adapted' / ck.name}", *common, f"output={tmp_path / 'b.json'}")
    assert status == 0, err
    assert json.loads((tmp_path / "b.json").read_text())["results"] == adapted["results"]
    # A task the checkpoint has no rows for cannot be saved with its dataset.
    (tmp_path / "new.json").write_text(json.dumps(synthetic_task(np.random.default_rng(7), "flip", pairs=2)))
    status, _, err = cli(capsys, f"checkpoint={ck}", f"puzzle_file={tmp_path / 'new.json'}", "adapt_steps=2",
                         f"adapt_save={tmp_path / 'again'}")
    error = err.splitlines()[-1]  # after the line saying what runs
    assert status == 2 and error.startswith("error: adapt_save=") and "task 'new' is not among the checkpoint's puzzles" in error
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("grid, message", [
    ([[0] * 31] * 31, "tasks.json: task bad: train[1].input: grid is 31x31, larger than 30x30"),
    ([[0, 1], [2]], "tasks.json: task bad: train[1].input: rows of different lengths"),
    ([[0, 10]], "tasks.json: task bad: train[1].input: colours must be integers 0..9"),
])
def test_arc_bad_grids_name_the_task(arc_ck, tmp_path, capsys, grid, message):
    _, ck = arc_ck
    task = synthetic_task(np.random.default_rng(3), "flip")
    task["train"][1]["input"] = grid
    (tmp_path / "tasks.json").write_text(json.dumps({"good": synthetic_task(np.random.default_rng(4), "col"), "bad": task}))
    status, _, err = cli(capsys, f"checkpoint={ck}", f"puzzle_file={tmp_path / 'tasks.json'}", "task=arc", "unseen=blank",
                         f"output={tmp_path / 'o.json'}")
    assert status == 2 and err.count("\n") == 1 and message in err, err
    assert sorted(os.listdir(tmp_path)) == ["tasks.json"]


CUSTOM_EXAMPLES = {
    "string": ([{"input": "cab", "output": "abc"}, {"input": "ba", "output": "ab"}], "bca"),
    "list": ([{"input": [3, 10, 2], "output": [2, 3, 10]}, {"input": [7], "output": [7]}], "[10, 3]"),
    "grid": ([{"input": [[1, 2, 3], [4, 5, 6]], "output": [[6, 5], [4, 3], [2, 1]]}, {"input": [[0]], "output": [[9, 9]]}],
             "[[1,2,3],[1,2,3],[1,2,0]]"),
}


@pytest.mark.parametrize("kind", sorted(CUSTOM_EXAMPLES))
def test_custom_tasks_of_every_shape_from_the_command_line_and_python(sudoku_ck, tmp_path, capsys, kind):
    """A custom task's strings, token lists and grids: typed, from the builder's own JSONL, and
    through the Python API; answers in the file's notation, printed and written."""
    import yaml
    examples, typed = CUSTOM_EXAMPLES[kind]
    data = build_custom(tmp_path, examples)
    src = tmp_path / "examples.jsonl"  # the builder's input: a puzzle file too
    run_config = yaml.safe_load(open(os.path.join(os.path.dirname(sudoku_ck), "all_config.yaml")))
    ck = untrained_checkpoint(run_config, data, tmp_path / "ck")
    status, out, err = cli(capsys, f"checkpoint={ck}", f"puzzle={typed}", "trace=true", f"output={tmp_path / 'typed.json'}")
    assert status == 0, err
    (result,) = json.loads((tmp_path / "typed.json").read_text())["results"]
    shape = {"string": str, "list": list, "grid": list}[kind]
    assert isinstance(result["answer"], shape) and (kind != "grid" or all(isinstance(r, list) for r in result["answer"]))
    assert (result["answer"] if kind == "string" else json.dumps(result["answer"])) in out
    status, out, err = cli(capsys, f"checkpoint={ck}", f"puzzle_file={src}", f"output={tmp_path / 'file.json'}",
                           f"picture={tmp_path / 'p.png'}")
    assert status == 0, err
    results = json.loads((tmp_path / "file.json").read_text())["results"]
    assert [r["puzzle"] for r in results] == [f"{src} line 1", f"{src} line 2"] and all("correct" in r for r in results)
    assert (tmp_path / "p.png").stat().st_size > 0
    predictor = load_predictor(str(ck))
    assert [r["answer"] for r in predictor.predict([json.dumps(e) for e in examples], progress=False)] == [r["answer"] for r in results]
