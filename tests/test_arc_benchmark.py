"""scripts/arc_benchmark.py: a folder of ARC task files built on a fitted canvas, a recipe trained
under a budget, one exact result line per test-time method; options checked before any work."""
import json
import re
import sys

import pytest

from conftest import REPO, arc_task_folder, run
from scripts import arc_benchmark

SCRIPT = str(REPO / "scripts" / "arc_benchmark.py")
# A toy size: the recipe's model shrunk to seconds of training.
TOY = ["epochs=4", "eval_interval=4", "global_batch_size=8", "eval_global_batch_size=16", "arch.hidden_size=32", "arch.num_heads=2",
       "arch.H_layers=1", "arch.L_layers=1", "compile=false", "num_aug=2", "budget_s=200"]
LINE = re.compile(r"^arc: (\d+\.\d)% pass@2, (\d+\.\d)% pass@1 on (\d+) test outputs \(protocol (\w+), adapt (\w+)\) "
                  r"after (\d+) s of training and (\d+) s of adaptation$")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_benchmark_end_to_end_on_a_task_folder_of_our_own(kind, tmp_path):
    """1xN grids and 5x5 grids, each with its fitted canvas, through the same command."""
    tasks = arc_task_folder(tmp_path / "tasks", kind)
    out = tmp_path / "run"
    proc = run([sys.executable, SCRIPT, f"data={tasks}", f"data_root={tmp_path / 'data'}", f"out={out}", *TOY], timeout=300)
    data = tmp_path / "data" / "arc-tasks-hrm-fit-aug2-seed42"
    meta = json.loads((data / "test" / "dataset.json").read_text())
    assert (meta["canvas_height"], meta["canvas_width"]) == ((2, 13) if kind == "1d" else (6, 6)) and meta["protocol"] == "hrm"
    lines = [l for l in proc.stdout.splitlines() if l.startswith("arc: ")]
    assert len(lines) == 1, proc.stdout
    m = LINE.match(lines[0])
    assert m, lines[0]
    # The first task of the folder has two test pairs, the others one each.
    assert int(m.group(3)) == 4 and m.group(4) == "hrm" and m.group(5) == "none" and int(m.group(7)) == 0
    assert 0 <= float(m.group(2)) <= float(m.group(1)) <= 100
    saved = json.loads((out / "arc_benchmark.json").read_text())
    assert [r["adapt"] for r in saved] == ["none"] and saved[0]["recipe"] == "arc1d_hrm"
    assert len(list((out / "eval-adapt-none").glob("evaluator_ARC_step_*/submission.json"))) == 1
    assert "| arc1d_hrm | hrm | none |" in (out / "arc_benchmark.md").read_text()
    assert sum(v["test_outputs"] for v in saved[0]["per_subset"].values()) == 4
    assert "max_train_seconds=170" in proc.stdout  # budget_s less reserve_s


@pytest.mark.parametrize("args, message", [
    ([], "error: data=<folder of ARC task files> is required"),
    (["data={tasks}", "protocol=mine"], "error: protocol: Input should be 'hrm' or 'unseen'"),
    (["data={tasks}", "adapt=none,none"], "error: adapt: none,none names a method twice"),
    (["data={tasks}", "adapt=gradient"], "error: adapt.0: Input should be 'none', 'embedding' or 'full'"),
    (["data={tasks}", "arch=trm", "recipe=arc1d_hrm"], "error: give arch= or recipe=, not both"),
    (["data={tasks}", "recipe=arc9"], "error: recipe=arc9: no config/experiment/arc9.yaml (ARC recipes: arc1d_hrm"),
    (["data={tasks}", "budget_s=20", "reserve_s=30"], "error: budget_s (20) must be larger than reserve_s (30)"),
    (["data={tasks}", "checkpoint_path=x"], "error: checkpoint_path= is set by the benchmark (out=); not an override"),
    (["data={tasks}", "lrr=1"], "error: unknown option lrr=: expected one of data, protocol"),
    (["data={tmp}/none"], "error: data={tmp}/none: no such folder"),
])
def test_bad_options_are_one_line_before_any_work(args, message, tmp_path, capsys):
    tasks = arc_task_folder(tmp_path / "tasks", "1d")
    fill = {"tasks": tasks, "tmp": tmp_path}
    with pytest.raises(SystemExit) as e:
        arc_benchmark.main([a.format(**fill) for a in args] + [f"data_root={tmp_path / 'data'}", f"out={tmp_path / 'o'}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(message.format(**fill)) and err.count("\n") == 1, err
    assert not (tmp_path / "data").exists() and not (tmp_path / "o").exists()


def test_recipe_follows_arch_and_protocol_and_budget_comes_from_it(tmp_path):
    tasks = arc_task_folder(tmp_path / "tasks", "1d")
    opts, overrides = arc_benchmark.parse_options([f"data={tasks}", "arch=trm", "protocol=unseen", "lr=2e-3", f"out={tmp_path / 'o'}"])
    assert opts.recipe_name == "arc1d_trm_unseen" and overrides == ["lr=2e-3"] and opts.adapt == ["none"]
    import yaml
    recipe = yaml.safe_load((REPO / "config" / "experiment" / "arc1d_trm_unseen.yaml").read_text())
    assert opts.budget_s == recipe["max_train_seconds"] + opts.reserve_s
    opts, _ = arc_benchmark.parse_options([f"data={tasks}", "adapt=none,full", f"out={tmp_path / 'o'}"])
    assert opts.adapt == ["none", "full"] and opts.data_dir.endswith("arc-tasks-hrm-fit-aug8-seed42")


def test_existing_out_is_refused(tmp_path, capsys):
    tasks = arc_task_folder(tmp_path / "tasks", "1d")
    (tmp_path / "o").mkdir()
    with pytest.raises(SystemExit):
        arc_benchmark.main([f"data={tasks}", f"out={tmp_path / 'o'}"])
    assert "already exists; give a new folder" in capsys.readouterr().err


def test_result_line_format():
    r = {"pass@2": 0.9123, "pass@1": 0.875, "test_outputs": 901, "protocol": "unseen", "adapt": "full", "train_s": 1790.4, "adapt_s": 61.6}
    assert arc_benchmark.result_line(r) == ("arc: 91.2% pass@2, 87.5% pass@1 on 901 test outputs (protocol unseen, adapt full) "
                                            "after 1790 s of training and 62 s of adaptation")


def test_per_subset_scores_each_folder_of_task_files(tmp_path):
    """pass@1 / pass@2 per folder (1D-ARC's categories) from submission.json and the task files."""
    for folder, name, out in (("move", "m1", [[0, 1]]), ("move", "m2", [[1, 0]]), ("fill", "f1", [[2, 2]])):
        (tmp_path / "tasks" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "tasks" / folder / f"{name}.json").write_text(json.dumps({"train": [], "test": [{"input": out, "output": out}]}))
    submission = {"m1": [{"attempt_1": [[0, 1]], "attempt_2": [[1, 1]]}],   # right at once
                  "m2": [{"attempt_1": [[0, 0]], "attempt_2": [[1, 0]]}],   # right at the second try
                  "f1": [{"attempt_1": [[2, 0]], "attempt_2": [[0, 2]]}]}   # wrong
    (tmp_path / "submission.json").write_text(json.dumps(submission))
    scores = arc_benchmark.per_subset(str(tmp_path / "tasks"), str(tmp_path / "submission.json"))
    assert scores == {"fill": {"test_outputs": 1, "pass@1": 0.0, "pass@2": 0.0},
                      "move": {"test_outputs": 2, "pass@1": 0.5, "pass@2": 1.0}}
