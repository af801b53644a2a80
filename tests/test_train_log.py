"""training/train_log.py: train_metrics.jsonl holds what W&B gets, averaged per interval, and a
one-line train/test summary is printed at each evaluation; a real run with W&B disabled."""
import json

import pytest

from conftest import REPO, TINY_HRM
from training.train_log import TrainMetricsLog, average, default_interval, summary_line


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_intervals_average_the_readings_and_a_resume_drops_later_lines(tmp_path):
    assert default_interval(625, 1) == 4 and default_interval(100, 1) == 1 and default_interval(100_000, 3) == 501
    log = TrainMetricsLog(str(tmp_path), interval=4)
    for step in (2, 4, 6, 8):
        log.add(step, {"train/lm_loss": float(step), "train/exact_accuracy": step / 10})
    assert log.flush() is None  # nothing pending: the interval ended at step 8
    log.add(10, {"train/lm_loss": 1.0, "train/exact_accuracy": 0.0})
    log.flush()  # e.g. at an evaluation
    got = lines(tmp_path / "train_metrics.jsonl")
    assert [(g["step"], g["averaged_over"]) for g in got] == [(4, 2), (8, 2), (10, 1)]
    assert got[0]["train/lm_loss"] == 3.0 and got[1]["train/exact_accuracy"] == pytest.approx(0.7)
    # Resumed from step 8: the interrupted run's line for step 10 goes, the others stay.
    TrainMetricsLog(str(tmp_path), interval=4, resumed_step=8)
    assert [g["step"] for g in lines(tmp_path / "train_metrics.jsonl")] == [4, 8]
    # A step where no row halted reports 0 accuracy (as W&B gets it); averages leave it out.
    mean = average([{"train/count": 1.0, "train/accuracy": 0.5, "train/lm_loss": 1.0},
                    {"train/count": 0.0, "train/accuracy": 0.0, "train/lm_loss": 3.0}])
    assert mean == {"train/count": 0.5, "train/accuracy": 0.5, "train/lm_loss": 2.0}
    # No row halted in any reading: no value, never 0 (a file line reads null).
    none = average([{"train/count": 0.0, "train/accuracy": 0.0, "train/steps": 0.0, "train/lm_loss": 3.0}])
    assert none == {"train/count": 0.0, "train/accuracy": None, "train/steps": None, "train/lm_loss": 3.0}
    log = TrainMetricsLog(str(tmp_path / "n"), interval=1)
    log.add(1, {"train/count": 0.0, "train/accuracy": 0.0, "train/lm_loss": 3.0})
    assert lines(tmp_path / "n" / "train_metrics.jsonl") == [{"step": 1, "averaged_over": 1, "train/count": 0.0,
                                                               "train/accuracy": None, "train/lm_loss": 3.0}]
    assert summary_line(1, {"averaged_over": 1, **none}, {}) == "step 1: train lm_loss 3 (mean of the 1 step(s) since the last evaluation)"


def test_summary_line():
    line = summary_line(12, {"step": 12, "averaged_over": 3, "train/exact_accuracy": 0.5, "train/accuracy": 0.875, "train/lm_loss": 0.25},
                        {"all": {"exact_accuracy": 0.125, "accuracy": 0.5, "lm_loss": 1.5, "steps": 3.0}, "eval/seconds": 1.0})
    assert line == ("step 12: train exact_accuracy 50.0%, accuracy 87.5%, lm_loss 0.25 (mean of the 3 step(s) since the last evaluation)"
                    " | test all exact_accuracy 12.5%, accuracy 50.0%, lm_loss 1.5")


@pytest.mark.slow
def test_run_without_wandb_writes_what_wandb_would_get(sudoku4, tmp_path, monkeypatch, capsys):
    """W&B disabled: the values training hands to the logger (recorded here) are the file's. Also
    the step counts a run prints: 48 puzzles in batches of 10 give 4 steps per epoch (the
    schedule's count, 48 * 2 / 10 = 9, includes the dropped incomplete batches)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import pretrain
    from utils import wandb_logging
    monkeypatch.setenv("WANDB_MODE", "disabled")
    handed = []

    class Recorded(wandb_logging.DisabledRun):
        def log(self, data, step=None):
            handed.append((step, dict(data)))

    monkeypatch.setattr(wandb_logging, "init_wandb", lambda *args, **kwargs: Recorded())
    ck = tmp_path / "ck"
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        cfg = compose("cfg_pretrain", overrides=[f"data_path={sudoku4}", "epochs=2", "eval_interval=1", "global_batch_size=10",
                                                 "evaluators=[]", *TINY_HRM, f"checkpoint_path={ck}", "+run_name=t",
                                                 "log_interval=2", "train_metrics_interval=6"])
    pretrain.launch(OmegaConf.to_container(cfg, resolve=True))
    out = capsys.readouterr().out

    train = {step: data for step, data in handed if "train/exact_accuracy" in data}
    assert sorted(train) == list(range(1, 9))  # every step, as the original (read back log_interval steps at a time)
    got = lines(ck / "train_metrics.jsonl")
    # A line every 6 steps, and at each evaluation (steps 4 and 8) for the readings since the last line.
    assert [(g["step"], g["averaged_over"]) for g in got] == [(4, 4), (6, 2), (8, 2)]
    assert set(got[-1]) == set(train[8]) | {"step", "averaged_over"}  # the keys W&B gets
    for line, steps in ((got[-1], (7, 8)), (got[0], (1, 2, 3, 4))):
        for key in train[8]:
            # Losses, lr, count: plain means; accuracies and steps: over the steps where rows halted (count > 0).
            readings = [train[s] for s in steps if key.endswith("loss") or key in ("train/lr", "train/count") or train[s]["train/count"] > 0]
            expected = sum(r[key] for r in readings) / len(readings) if readings else None  # no row halted: null
            assert line[key] == pytest.approx(expected, rel=1e-12), key
    assert got[-1]["train/exact_accuracy"] == pytest.approx(train[8]["train/exact_accuracy"], rel=1e-12)  # rows halt at step 8 (halt_max_steps 2)
    # eval_metrics.jsonl sets train (mean of the steps since the last evaluation) beside test.
    evaluated = {line["step"]: line for line in lines(ck / "eval_metrics.jsonl")}
    since = [train[s] for s in (5, 6, 7, 8) if train[s]["train/count"] > 0]
    assert evaluated[8]["train"]["averaged_over"] == 4 and evaluated[8]["train"]["exact_accuracy"] == pytest.approx(
        sum(r["train/exact_accuracy"] for r in since) / len(since), rel=1e-12)
    evals = {step: data for step, data in handed if "all/exact_accuracy" in data}
    for step in (4, 8):
        summary = next(line for line in out.splitlines() if line.startswith(f"step {step}: train exact_accuracy"))
        assert f"test all exact_accuracy {100 * evals[step]['all/exact_accuracy']:.1f}%" in summary
    # Counts agree: the start line, the checkpoints and the last line say 8 steps.
    assert "M parameters, 8 steps," in out and (ck / "step_8").is_file() and not (ck / "step_9").exists()
    assert f"done: 8 steps; last checkpoint {ck / 'step_8'}" in out
