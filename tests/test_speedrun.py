"""scripts/speedrun.py: data built per seed, the recipe trained under a budget, evaluate.py's score
in one line, the time-to-accuracy table and picture; options checked before any work."""
import json
import sys

import pytest

from conftest import REPO, run
from scripts import speedrun

SCRIPT = str(REPO / "scripts" / "speedrun.py")
# A toy size: 64 puzzles in batches of 16 (4 steps an epoch), a tiny model, a budget of seconds.
TOY = ["train_puzzles=64", "test_puzzles=16", "epochs=4", "eval_interval=1", "global_batch_size=16", "eval_max_examples=8",
       "eval_global_batch_size=8", "arch.hidden_size=32", "arch.H_layers=1", "arch.L_layers=1", "arch.H_cycles=1", "arch.L_cycles=1",
       "arch.halt_max_steps=2", "compile=false", "log_interval=1"]


@pytest.mark.slow
def test_speedrun_end_to_end_at_a_toy_size(tmp_path):
    out = tmp_path / "run"
    proc = run([sys.executable, SCRIPT, f"data_root={tmp_path / 'data'}", f"out={out}", "data_seed=3", *TOY], timeout=120)
    data = tmp_path / "data" / "sudoku-6x6-speedrun-64-16-seed3"
    assert json.loads((data / "train" / "dataset.json").read_text())["total_puzzles"] == 64
    # Budget 600 s, not reached: the recipe's whole 16 steps, evaluated after each epoch.
    steps = sorted(json.loads(line)["step"] for line in (out / "eval_metrics.jsonl").read_text().splitlines())
    assert steps == [4, 8, 12, 16] and (out / "step_16").is_file()
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("speedrun: ") and last.endswith(" s (16 steps)") and "% held-out exact in " in last
    table = (out / "speedrun.md").read_text()
    assert table.startswith(last) and "| 16 | " in table and "all (evaluate.py, the score)" in table and "first 8" in table
    assert (out / "speedrun.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "max_train_seconds=585" in proc.stdout and "within budget" in proc.stdout  # budget_s less reserve_s, passed to pretrain.py
    assert "compile cache cold" in proc.stdout and not (out / speedrun.COMPILE_CACHE).exists()  # a fresh one, removed after

    # A second speedrun on that seed reuses the data.
    opts = speedrun.parse_options([f"data_root={tmp_path / 'data'}", f"out={tmp_path / 'again'}", "data_seed=3", *TOY])
    assert speedrun.check_data(opts)


@pytest.mark.parametrize("args, message", [
    (["budget_s=ten"], "error: budget_s=ten: expected a number"),
    (["data_seed=-1"], "error: data_seed must be at least 0, got -1"),
    (["budget_s=10", "reserve_s=10"], "error: budget_s (10) must be positive and reserve_s (10) in [0, budget_s)"),
    (["data_sed=1"], "error: unknown option data_sed=: expected data_seed="),
    (["checkpoint_path=x"], "error: checkpoint_path= is set by the speedrun (out=); not an override"),
    (["fast"], "error: 'fast': expected key=value (see --help)"),
])
def test_bad_options_are_one_line_before_any_work(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        speedrun.main([f"data_root={tmp_path / 'data'}", f"out={tmp_path / 'o'}", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "data").exists() and not (tmp_path / "o").exists()


def test_the_budget_picks_the_track_recipe(tmp_path):
    """Up to 300 s the 5-minute recipe (its schedule fits the budget), above it the 10-minute one."""
    pick = {b: speedrun.parse_options([f"out={tmp_path / 'o'}", f"budget_s={b}"]).experiment for b in (600, 301, 300, 120)}
    assert pick == {600: "speedrun_sudoku6x6", 301: "speedrun_sudoku6x6", 300: "speedrun_sudoku6x6_5min", 120: "speedrun_sudoku6x6_5min"}


def test_each_track_keeps_its_own_reserve_for_what_follows_the_stop(tmp_path):
    """15 s held back on the 10-minute track, 8 s on the 5-minute one; reserve_s= overrides either."""
    reserve = lambda *args: speedrun.parse_options([f"out={tmp_path / 'o'}", *args]).reserve_s  # noqa: E731
    assert (reserve(), reserve("budget_s=300"), reserve("budget_s=300", "reserve_s=20"), reserve("reserve_s=0")) == (15, 8, 20, 0)


def test_existing_out_and_data_of_other_sizes_are_refused(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    with pytest.raises(SystemExit):
        speedrun.main([f"out={tmp_path / 'o'}"])
    assert "already exists; give a new folder" in capsys.readouterr().err
    data = tmp_path / "data" / "sudoku-6x6-speedrun-seed2"
    for split, n in (("train", 5), ("test", 1000)):
        (data / split).mkdir(parents=True)
        (data / split / "dataset.json").write_text(json.dumps({"total_puzzles": n}))
    with pytest.raises(SystemExit) as e:
        speedrun.main([f"data_root={tmp_path / 'data'}", f"out={tmp_path / 'new'}", "data_seed=2"])
    assert e.value.code == 2
    assert f"{data} holds 5 train / 1000 test puzzles, not 20000 / 1000; remove it to rebuild" in capsys.readouterr().err


def test_default_data_folders_and_passed_through_overrides(tmp_path):
    opts = speedrun.parse_options([f"data_root={tmp_path}", "compile=false", "arch.hidden_size=128", "+arch.mlp_t=true"])
    assert opts.data_dir == str(tmp_path / "sudoku-6x6-speedrun") and opts.budget_s == 600
    assert opts.overrides == ["compile=false", "arch.hidden_size=128", "+arch.mlp_t=true"]
    assert speedrun.parse_options([f"data_root={tmp_path}", "data_seed=4"]).data_dir == str(tmp_path / "sudoku-6x6-speedrun-seed4")


def test_help_answers(capsys):
    speedrun.main(["--help"])
    out = capsys.readouterr().out
    assert "speedrun: <exact> held-out exact in <seconds> s (<steps> steps)" in out and "data_seed=N" in out
