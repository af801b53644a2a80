"""scripts/summarize_runs.py: one table of the runs of a sweep (best values checked against their
eval_metrics.jsonl), a CSV, a valid PNG of the curves, and one-line errors."""
import csv
import json
import os

import pytest
from PIL import Image

from scripts.summarize_runs import best_and_last, main, summarize
from test_runs import sweep  # noqa: F401  (the session's 2-job multirun)


def logged(path):
    return [json.loads(line) for line in open(path)]


def test_best_and_last_prefers_low_losses_and_times_and_the_earliest_tie():
    points = [(3, 0.5), (6, 0.9), (9, 0.9), (12, 0.7)]
    assert best_and_last(points, "all/exact_accuracy") == ((6, 0.9), (12, 0.7))
    assert best_and_last(points, "all/lm_loss") == ((3, 0.5), (12, 0.7))
    assert best_and_last(points, "eval/seconds") == ((3, 0.5), (12, 0.7))


def test_main_metrics_by_default_and_all_on_request(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "all_config.yaml").write_text("lr: 0.1\n")
    (tmp_path / "r" / "eval_metrics.jsonl").write_text(
        '{"step": 3, "all": {"accuracy": 0.5, "exact_accuracy": 0.1, "lm_loss": 2.0, "q_halt_loss": 0.3, "steps": 4.0}, '
        '"ARC": {"pass@1": 0.2, "pass@1000": 0.4}, "eval/seconds": 9.5}\n')
    header = summarize(str(tmp_path), out=str(tmp_path)).splitlines()[0]
    for shown in ("all/exact_accuracy", "all/accuracy", "all/lm_loss", "ARC/pass@1"):
        assert f"{shown} best" in header
    for hidden in ("q_halt_loss", "all/steps", "pass@1000", "eval/seconds"):
        assert hidden not in header
    header = summarize(str(tmp_path), metrics=["all"], out=str(tmp_path)).splitlines()[0]
    assert "eval/seconds best" in header and "all/q_halt_loss best" in header


@pytest.mark.slow
def test_summary_of_a_sweep(sweep, tmp_path):  # noqa: F811
    text = summarize(str(sweep), out=str(tmp_path))
    rows = [line for line in text.splitlines() if line.startswith("| job")]
    assert [r.split(" | ")[0] for r in rows] == ["| job0_lr-0.001", "| job1_lr-0.01"]
    assert "lr=0.001" in rows[0] and "lr=0.01" in rows[1] and text.startswith("All 2 runs: ")

    records = list(csv.DictReader(open(tmp_path / "runs_summary.csv")))
    for job, record in zip(("job0_lr-0.001", "job1_lr-0.01"), records):
        lines = logged(sweep / job / "eval_metrics.jsonl")
        losses = [(entry["step"], entry["all"]["lm_loss"]) for entry in lines]
        best_step, best = min(losses, key=lambda sv: (sv[1], sv[0]))
        assert float(record["all/lm_loss best"]) == pytest.approx(best) and int(record["all/lm_loss best_step"]) == best_step
        accs = [(entry["step"], entry["all"]["accuracy"]) for entry in lines]
        top = max(a for _, a in accs)
        assert float(record["all/accuracy best"]) == pytest.approx(top)
        assert int(record["all/accuracy best_step"]) == min(s for s, a in accs if a == top)
        assert float(record["all/accuracy last"]) == pytest.approx(accs[-1][1]) and int(record["steps"]) == lines[-1]["step"]
    image = Image.open(tmp_path / "runs_curves.png")
    assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
    assert (tmp_path / "runs_summary.md").read_text() == text


def errors_of(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        main([*map(str, args)])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_command_line_errors(tmp_path, capsys):
    assert "nope: no such folder" in errors_of(capsys, tmp_path / "nope")
    assert "no runs found" in errors_of(capsys, tmp_path)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "all_config.yaml").write_text("lr: 0.1\n")
    (tmp_path / "r" / "eval_metrics.jsonl").write_text('{"step": 3, "all": {"accuracy": 0.5}}\n')
    assert "all/acuracy not logged by any run; available: all/accuracy" in errors_of(capsys, tmp_path, "--metrics", "all/acuracy")
    (tmp_path / "r" / "eval_metrics.jsonl").write_text('{"all": 1}\n')
    assert "eval_metrics.jsonl:1: not an evaluation line" in errors_of(capsys, tmp_path)
    assert not os.path.exists(tmp_path / "runs_summary.md")


def test_a_broken_run_folder_is_skipped_with_a_warning(tmp_path, capsys):
    for name, config, metrics in (("good", "lr: 0.1\n", '{"step": 3, "all": {"accuracy": 0.5}}\n'),
                                  ("list", "- a\n- b\n", ""), ("bad-yaml", "lr: [\n", ""),
                                  ("bad-metrics", "lr: 0.2\n", "not json\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "all_config.yaml").write_text(config)
        (tmp_path / name / "eval_metrics.jsonl").write_text(metrics)
    text = summarize(str(tmp_path), out=str(tmp_path / "out"))
    assert [r.split(" | ")[0] for r in text.splitlines() if r.startswith("| ")][1:] == ["| good"]
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("warning: skipped a run: ") for w in warnings)
    assert any("bad-metrics/eval_metrics.jsonl:1" in w for w in warnings) and any("list/all_config.yaml" in w for w in warnings)


def test_runs_behind_links_count_and_wall_time_is_the_trainings_own(tmp_path):
    """A folder of symbolic links to runs is summarised; files added to a run folder after training
    (evaluate.py predictions, this script's own tables) do not lengthen its wall time."""
    run = tmp_path / "store" / "r"
    run.mkdir(parents=True)
    for name, t in (("all_config.yaml", 1000), ("eval_metrics.jsonl", 1090), ("step_6", 1100), ("run_end.json", 1120),
                    ("step_6_all_preds.0", 1300), ("runs_summary.md", 1400)):
        (run / name).write_text('{"step": 6, "all": {"exact_accuracy": 0.5}}\n' if name == "eval_metrics.jsonl" else
                                '{"step": 6, "planned_steps": 6, "stopped_by": null}\n' if name == "run_end.json" else "lr: 0.1\n")
        os.utime(run / name, (t, t))
    (tmp_path / "links").mkdir()
    os.symlink(run, tmp_path / "links" / "r")
    os.symlink(tmp_path / "links", tmp_path / "links" / "loop")  # a link back up: visited once
    summarize(str(tmp_path / "links"), out=str(tmp_path / "out"))
    records = list(csv.DictReader(open(tmp_path / "out" / "runs_summary.csv")))
    assert [r["run"] for r in records] == ["r"]
    assert float(records[0]["wall_seconds"]) == 120.0 and records[0]["steps"] == "6" and records[0]["stopped_by"] == ""
