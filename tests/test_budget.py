"""``max_train_seconds``: a run stops at its wall-clock budget (from process start) after a step,
evaluates and saves as at the end of a run, and resumes from there like any saved run."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY_HRM, load_weights, lr_at, minimal_pretrain_config
from training.budget import TimeBudget
from utils.clock import ProcessClock


def run_in_process(data, ck, *extra):
    """A real training run in this process (``pretrain.launch``, as the command line calls it):
    48 puzzles in batches of 8 for 2 epochs = 12 steps, evaluated after each epoch (6 steps)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    import pretrain
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        cfg = compose("cfg_pretrain", overrides=[
            f"data_path={data}", "epochs=2", "eval_interval=1", "global_batch_size=8", "evaluators=[]", "lr_warmup_steps=1",
            *TINY_HRM, f"checkpoint_path={ck}", "+run_name=b", "compile=false", *extra])
    pretrain.launch(OmegaConf.to_container(cfg, resolve=True))


def evals(ck):
    return {line["step"]: line for line in map(json.loads, (ck / "eval_metrics.jsonl").read_text().splitlines())}


def test_clock_counts_from_process_start_not_from_import():
    code = "import time; time.sleep(0.4); from utils.clock import ProcessClock; print(ProcessClock().elapsed())"
    elapsed = float(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout)
    assert 0.4 <= elapsed < 10
    clock = ProcessClock()
    assert clock.elapsed() <= ProcessClock().elapsed() + 0.02  # one origin per process, whichever object reads it


def test_budget_reached_only_when_set_and_spent():
    assert not TimeBudget(None).reached()
    assert TimeBudget(1e-6).reached()  # this process started more than a microsecond ago
    assert not TimeBudget(1e6).reached()


def test_run_stops_at_the_budget_evaluates_saves_and_resumes(sudoku4, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    ck = tmp_path / "ck"
    # This test process started long before: the budget is spent once the run's first step is done.
    run_in_process(sudoku4, ck, "max_train_seconds=0.001")
    out = capsys.readouterr().out
    assert "max_train_seconds=0.001 reached" in out and "stopped after step 1 of 12; evaluating and saving as at the end of a run" in out
    logged = evals(ck)
    assert sorted(logged) == [1]  # the end-of-run evaluation, mid-pass
    assert logged[1]["eval/since_start_s"] > 0 and logged[1]["eval/seconds"] > 0
    assert (ck / "step_1").is_file() and (ck / "step_1.train_state.pt").is_file()
    assert not any(p.name.startswith("step_") and p.name != "step_1" and not p.name.startswith("step_1.") for p in ck.iterdir())
    end = json.loads((ck / "run_end.json").read_text())
    assert (end["step"], end["planned_steps"], end["stopped_by"], end["clock"]) == (1, 12, "max_train_seconds", "process start")

    # Resumed without a budget (the key may change on resume), it finishes the run from there.
    run_in_process(sudoku4, ck, f"resume={ck}")
    assert sorted(evals(ck)) == [1, 6, 12]
    assert json.loads((ck / "run_end.json").read_text())["stopped_by"] is None  # the resumed run did all its steps
    assert (ck / "step_12").is_file() and load_weights(ck / "step_12").keys() == load_weights(ck / "step_1").keys()


def test_a_budget_not_reached_changes_nothing(trained_hrm, tmp_path, monkeypatch):
    """The session's tiny trained run again with a budget it never reaches: the same weights."""
    import yaml
    import pretrain
    monkeypatch.setenv("WANDB_MODE", "disabled")
    ck, logged = trained_hrm
    raw = yaml.safe_load((ck / "all_config.yaml").read_text())
    raw.update(checkpoint_path=str(tmp_path / "b"), max_train_seconds=1e6)
    pretrain.launch(raw)
    a, b = load_weights(ck / "step_12"), load_weights(tmp_path / "b" / "step_12")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(evals(tmp_path / "b")) == sorted(logged) == [6, 12]


@pytest.mark.parametrize("value", ["0", "-5"])
def test_bad_budget_is_one_line(value):
    from training.config import parse_config
    from utils.config import ConfigError
    with pytest.raises(ConfigError, match=f"^config: max_train_seconds must be a positive number of seconds or null, got {value}"):
        parse_config({"arch": {"name": "x", "loss": {"name": "y"}}, "global_batch_size": 8, "epochs": 1, "lr": 1e-3, "lr_min_ratio": 1.0,
                      "lr_warmup_steps": 0, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "puzzle_emb_lr": 1e-2,
                      "puzzle_emb_weight_decay": 0.1, "max_train_seconds": float(value)})


def test_a_switch_is_not_a_budget():
    """``max_train_seconds=true`` is refused (pydantic would read it as 1 second)."""
    from training.config import parse_config
    from utils.config import ConfigError
    with pytest.raises(ConfigError, match="max_train_seconds=true: expected a number of seconds"):
        parse_config({"arch": {"name": "x", "loss": {"name": "y"}}, "global_batch_size": 8, "epochs": 1, "lr": 1e-3, "lr_min_ratio": 1.0,
                      "lr_warmup_steps": 0, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "puzzle_emb_lr": 1e-2,
                      "puzzle_emb_weight_decay": 0.1, "max_train_seconds": True})


def test_a_stop_signal_during_the_final_evaluation_after_the_budget_exits_143(sudoku4, tmp_path, capsys, monkeypatch):
    """SIGTERM arriving while the run evaluates and saves after max_train_seconds: both complete,
    and the run ends as a stopped run (exit status 128 + 15), not as a finished one."""
    import os
    import signal

    import tqdm

    from training.preemption import Preempted
    monkeypatch.setenv("WANDB_MODE", "disabled")
    write = tqdm.tqdm.write

    def write_then_signal(text, *args, **kwargs):  # the signal comes right after the budget stop is announced
        write(text, *args, **kwargs)
        if "max_train_seconds=" in text and "reached" in text:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(tqdm.tqdm, "write", write_then_signal)
    ck = tmp_path / "ck"
    with pytest.raises(Preempted) as e:
        run_in_process(sudoku4, ck, "max_train_seconds=0.001")
    assert e.value.exit_status == 128 + signal.SIGTERM and f"resume={ck}/step_1" in str(e.value)
    assert sorted(evals(ck)) == [1] and (ck / "step_1").is_file() and (ck / "step_1.train_state.pt").is_file()


@pytest.mark.slow
def test_every_job_of_a_multirun_gets_its_own_budget(sudoku4, tmp_path):
    """A real 2-job Hydra multirun in one process: job 0 (many epochs) is stopped by the budget,
    counted from the process start; job 1 (2 epochs, 12 steps) starts its own clock and finishes,
    where a process clock would have stopped it after one step. The run table marks job 0."""
    from conftest import pretrain, run
    budget = 12
    proc = pretrain("-m", f"data_path={sudoku4}", "epochs=400,2", "eval_interval=null", "global_batch_size=8", "evaluators=[]",
                    "lr_warmup_steps=1", *TINY_HRM, "compile=false", f"max_train_seconds={budget}", "checkpoint_path=ck", cwd=tmp_path)
    job0, job1 = tmp_path / "ck" / "job0_epochs-400", tmp_path / "ck" / "job1_epochs-2"
    end0, end1 = (json.loads((job / "run_end.json").read_text()) for job in (job0, job1))
    assert end0["stopped_by"] == "max_train_seconds" and end0["step"] < end0["planned_steps"] == 2400
    assert end0["clock"] == "process start" and end0["seconds"] >= budget
    assert f"max_train_seconds={budget} reached" in proc.stdout and "after process start" in proc.stdout
    assert (end1["stopped_by"], end1["step"], end1["planned_steps"], end1["clock"]) == (None, 12, 12, "job start")
    assert end1["seconds"] < end0["seconds"]  # counted from the job's start
    assert evals(job1)[12]["eval/since_start_s"] < evals(job0)[end0["step"]]["eval/since_start_s"]

    table = run([sys.executable, str(REPO / "scripts" / "summarize_runs.py"), str(tmp_path / "ck")]).stdout
    assert f"| {end0['step']} of 2400, stopped by max_train_seconds |" in table and "| 12 |" in table


def test_the_budget_clock_decays_the_lr_as_far_as_the_steps_or_the_budget_have_gone():
    from utils.schedule import cosine_schedule_with_warmup_lr_lambda

    def by_steps(step):
        return cosine_schedule_with_warmup_lr_lambda(step, base_lr=1e-3, num_warmup_steps=10, num_training_steps=1000, min_ratio=0.1)

    budget, steps = minimal_pretrain_config(lr_schedule_clock="budget", max_train_seconds=100), minimal_pretrain_config(max_train_seconds=100)
    assert lr_at(budget, 5, 0.9) == by_steps(5) == 5e-4, "the warm-up counts steps"
    assert lr_at(budget, 20, 0.5) == by_steps(10 + 0.5 * 990) and lr_at(budget, 20, 0.5) < 0.6 * by_steps(20)
    assert lr_at(budget, 800, 0.5) == by_steps(800), "the steps are further along than the budget"
    assert lr_at(budget, 20, 1.0) == pytest.approx(1e-4) and lr_at(budget, 20, 0.0) == by_steps(20)
    assert lr_at(steps, 20, 0.5) == by_steps(20), "the default clock: the planned steps only, as the original"


def test_the_budget_clock_needs_a_budget():
    from utils.config import ConfigError
    with pytest.raises(ConfigError, match="^config: lr_schedule_clock=budget decays the LR over the time budget: set max_train_seconds too"):
        minimal_pretrain_config(lr_schedule_clock="budget")


def test_a_run_on_the_budget_clock_ends_its_decay_at_the_budget_not_at_its_planned_steps(sudoku4, tmp_path, monkeypatch):
    """A real run planned for 6000 steps with 3 s to train: its LR reaches the minimum when the
    budget runs out, after a few hundred steps (the step schedule would still be at its peak)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    import pretrain
    monkeypatch.setenv("WANDB_MODE", "disabled")
    ck = tmp_path / "ck"
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        cfg = compose("cfg_pretrain", overrides=[
            f"data_path={sudoku4}", "epochs=1000", "eval_interval=1000", "global_batch_size=8", "evaluators=[]", "lr=1e-3", "lr_min_ratio=0.1",
            "lr_warmup_steps=2", *TINY_HRM, f"checkpoint_path={ck}", "+run_name=b", "compile=false", "train_metrics_interval=1",
            "max_train_seconds=3", "lr_schedule_clock=budget"])
    pretrain.launch(OmegaConf.to_container(cfg, resolve=True), clock=ProcessClock(from_now=True))
    lrs = [line["train/lr"] for line in map(json.loads, (ck / "train_metrics.jsonl").read_text().splitlines())]
    end = json.loads((ck / "run_end.json").read_text())
    assert end["stopped_by"] == "max_train_seconds" and end["planned_steps"] == 6000 and 20 < end["step"] == len(lrs) < 3000
    assert lrs[0] == 5e-4, "the warm-up counts steps"
    assert all(later <= earlier for earlier, later in zip(lrs[1:], lrs[2:])), "after the warm-up the LR only falls"
    assert lrs[-1] < 1.2e-4 < 0.5e-3 < lrs[1]
