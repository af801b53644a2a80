"""scripts/plot_runs.py: training and test curves of several runs on one figure (runs reached through
a symbolic link too), debiased smoothing, null training values skipped, one-line errors."""
import json
import os

import pytest
from PIL import Image

from scripts.plot_runs import collect, main, plot_runs, read_train_curves, smooth
from test_runs import sweep  # noqa: F401  (the session's 2-job multirun)


def write_run(folder, train_lines, eval_lines):
    folder.mkdir(parents=True)
    (folder / "all_config.yaml").write_text("lr: 0.1\n")
    (folder / "train_metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in train_lines))
    (folder / "eval_metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in eval_lines))


def test_smoothing_is_debiased_and_zero_weight_is_none():
    assert smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0 at the start
    assert smooth([1.0, 3.0], 0.0) == [1.0, 3.0]
    assert smooth([0.0, 1.0], 0.5) == pytest.approx([0.0, 1.0 * 0.5 / 0.75])


def test_several_runs_train_and_test_on_one_figure(tmp_path, capsys):
    train = [{"step": 1, "train/lm_loss": 2.0, "train/exact_accuracy": None}, {"step": 2, "train/lm_loss": 1.5, "train/exact_accuracy": 0.25}]
    evals = [{"step": 2, "all": {"exact_accuracy": 0.5, "lm_loss": 1.2}, "train": {"exact_accuracy": 0.25}, "eval/seconds": 1.0}]
    write_run(tmp_path / "sweep" / "a", train, evals)
    write_run(tmp_path / "elsewhere" / "b", train[:1], evals)
    os.symlink(tmp_path / "elsewhere" / "b", tmp_path / "sweep" / "b")

    assert read_train_curves(str(tmp_path / "sweep" / "a" / "train_metrics.jsonl"))["exact_accuracy"] == [(2, 0.25)]  # null skipped
    runs = collect([str(tmp_path / "sweep")])
    assert sorted(runs) == ["a", "b"]
    assert runs["b"][0]["lm_loss"] == [(1, 2.0)] and runs["b"][1]["all/exact_accuracy"] == [(2, 0.5)]

    out = tmp_path / "fig.png"
    main([str(tmp_path / "sweep"), "--out", str(out), "--smooth", "0.8"])
    assert f"written: {out} (exact_accuracy, lm_loss)" in capsys.readouterr().out
    image = Image.open(out)
    assert image.format == "PNG" and image.size[0] > 500
    assert plot_runs([str(tmp_path / "sweep" / "a")], ["lm_loss"], str(tmp_path / "one.png"))[1] == ["lm_loss"]


@pytest.mark.parametrize("args, message", [
    (["{root}/none"], "{root}/none: no such folder"),
    (["{root}/empty"], "{root}/empty: no runs found"),
    (["{root}/r", "--metrics", "pass@9"], "--metrics: pass@9 not logged by any run; available: exact_accuracy, lm_loss"),
    (["{root}/r", "--smooth", "1"], "--smooth 1.0: expected a weight in [0, 1)"),
])
def test_errors_are_one_line(tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    write_run(tmp_path / "r", [{"step": 1, "train/lm_loss": 2.0}], [{"step": 1, "all": {"exact_accuracy": 0.5}}])
    with pytest.raises(SystemExit) as e:
        main([a.format(root=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: " + message.format(root=tmp_path)) and err.count("\n") == 1


@pytest.mark.slow
def test_curves_of_a_real_sweep(sweep, tmp_path):  # noqa: F811
    path, chosen = plot_runs([str(sweep)], out=str(tmp_path / "c.png"))
    assert chosen == ["exact_accuracy", "accuracy", "lm_loss"] and Image.open(path).format == "PNG"
    runs = collect([str(sweep)])
    assert sorted(runs) == ["job0_lr-0.001", "job1_lr-0.01"]
    for job, (train, evals) in runs.items():
        steps = [json.loads(line)["step"] for line in (sweep / job / "train_metrics.jsonl").read_text().splitlines()]
        assert [s for s, _ in train["lm_loss"]] == steps and evals["all/exact_accuracy"]
