"""inference/analysis.py against hand-computed cases, and scripts/analyze_checkpoint.py end to end."""
import json
import os

import numpy as np
import pytest

from inference import analysis as A


def test_reliability_matches_a_hand_computed_diagram():
    # 4 bins. Bin 0: 0.1 (wrong); bin 1: 0.3, 0.4 (one right); bin 3: 0.8, 0.9, 1.0 (right, right, wrong).
    conf = np.array([0.1, 0.3, 0.4, 0.8, 0.9, 1.0])
    correct = np.array([0, 1, 0, 1, 1, 0], dtype=bool)
    rel = A.reliability(conf, correct, bins=4)
    np.testing.assert_array_equal(rel["count"], [1, 2, 0, 3])
    np.testing.assert_allclose(rel["confidence"][[0, 1, 3]], [0.1, 0.35, 0.9])
    np.testing.assert_allclose(rel["accuracy"][[0, 1, 3]], [0.0, 0.5, 2 / 3])
    assert np.isnan(rel["accuracy"][2])
    # ECE = 1/6 * 0.1 + 2/6 * 0.15 + 3/6 * |2/3 - 0.9|
    assert rel["ece"] == pytest.approx(0.1 / 6 + 0.3 / 6 + 0.5 * (0.9 - 2 / 3))
    assert A.reliability(np.array([0.25, 0.75]), np.array([0.25, 0.75]) > 0.5, bins=2)["ece"] == pytest.approx(0.25)


def test_memorisation_rate_on_a_copy_of_train_and_on_disjoint_answers():
    rng = np.random.default_rng(0)
    train = rng.integers(2, 6, size=(20, 16))
    train[:, 0] = -100  # an ignored position
    # The test split is a copy of the train split, and the model answers every test example right.
    copy = A.memorisation(train.copy(), train.copy(), train)
    assert copy["preds_in_train"] == 1.0 and copy["test_labels_in_train"] == 1.0 and copy["wrong"] == 0
    # No test answer occurs in train (token 6 never does): 0.0, even for right answers.
    test = rng.integers(2, 7, size=(10, 16))
    test[:, 5] = 6
    disjoint = A.memorisation(test, test, train)
    assert disjoint["preds_in_train"] == 0.0 and disjoint["test_labels_in_train"] == 0.0
    # Wrong answers that are train answers: 2 of the 3 wrong predictions; a prediction's ignored cells do not matter.
    preds = test.copy()
    preds[:2] = train[:2]
    preds[2, 1] = 0
    preds[:, 0] = 9
    test[:, 0] = -100
    mixed = A.memorisation(preds, test, train)
    assert mixed["wrong"] == 3 and mixed["wrong_preds_in_train"] == pytest.approx(2 / 3) and mixed["preds_in_train"] == pytest.approx(0.2)
    assert mixed["baseline"] == 0.0 and not mixed["uninformative"]  # no test answer is a train answer


def test_memorisation_is_flagged_uninformative_when_train_answers_cover_the_test_answers():
    rng = np.random.default_rng(1)
    train = rng.integers(2, 6, size=(30, 16))
    test = train[:10].copy()            # every test answer is a train answer (as in 4x4 Sudoku)
    preds = test.copy()
    preds[:3] = train[20:23]            # 3 wrong predictions, all train answers
    preds[3, 0] = 9                     # 1 wrong prediction that is no train answer
    mem = A.memorisation(preds, test, train)
    assert mem["uninformative"] and mem["test_labels_in_train"] == 1.0
    # 6 right predictions are train answers anyway: the baseline; the 3 copied wrong ones come on top.
    assert mem["baseline"] == pytest.approx(0.6) and mem["preds_in_train"] == pytest.approx(0.9)
    assert mem["wrong"] == 4 and mem["wrong_preds_in_train"] == pytest.approx(0.75)
    from scripts.analyze_checkpoint import memorisation_line
    line = memorisation_line(mem)
    assert "baseline 60.0%" in line and "uninformative" in line


def test_exact_accuracy_by_key_and_halting_trace():
    labels = np.array([[1, 2, -100], [1, 2, 3], [3, 3, 3]])
    trace = np.array([[[1, 0, 0], [1, 2, 7]],      # right after segment 2
                      [[1, 2, 3], [1, 2, 0]],      # right after segment 1 only
                      [[0, 0, 0], [0, 0, 0]]])     # never right
    out = A.halting_accuracy(trace, labels, steps=np.array([2, 1, 2]))
    np.testing.assert_allclose(out["per_segment"], [1 / 3, 1 / 3])
    assert out["at_halt"] == pytest.approx(2 / 3)  # each stopped where it halts: rows 0 and 1 right
    assert A.accuracy_by(np.array([2, 1, 2]), A.exact_correct(trace[:, -1], labels)) == [(1, 1, 0.0), (2, 2, 0.5)]


@pytest.mark.slow
def test_analyze_checkpoint_report(trained_hrm, tmp_path, capsys):
    from scripts import analyze_checkpoint
    ck, logged = trained_hrm
    out = tmp_path / "analysis"
    argv = [f"checkpoint={ck}/step_12", f"out={out}", "halt_max_steps=[1,3]", "train_max_examples=8"]
    analyze_checkpoint.main(argv)
    printed = capsys.readouterr().out
    assert "exact accuracy: train" in printed and "ECE" in printed and str(out / "report.md") in printed
    res = json.loads((out / "results.json").read_text())
    assert res["exact_accuracy"]["test"] == pytest.approx(logged[12]["exact_accuracy"])
    assert res["examples"] == {"test": 16, "train": 8} and res["task"] == "sudoku"
    assert list(res["test_time_compute"]) == ["1", "3"] and sum(res["halting"]["histogram"].values()) == 16
    report = (out / "report.md").read_text()
    for name in ("halting.png", "reliability.png", "test_time_compute.png", "accuracy.png", "breakdown.png", "test_time_scaling.png"):
        assert (out / name).stat().st_size > 1000 and name in report
    assert (out / "evals" / "test" / "step_12_all_preds.0.trace.npy").is_file()  # for puzzle_visualizer.html
    # The test-time scaling curve (16 views by default): one sample is the plain test evaluation.
    scaling = res["test_time_scaling"]
    assert scaling["samples"] == [1, 2, 4, 8, 16] and scaling["vote"][0] == pytest.approx(res["exact_accuracy"]["test"])
    assert scaling["q_halt"][0] == scaling["vote"][0] and "## Test-time scaling" in report and "test-time scaling" in printed
    # A second run reads the saved evaluations instead of running them again.
    analyze_checkpoint.main(argv)
    assert "| test | " in (out / "report.md").read_text() and "reused" in (out / "report.md").read_text()

    with pytest.raises(SystemExit) as e:
        analyze_checkpoint.main([f"checkpoint={ck}/step_12", f"out={out}", "max_examples=0"])
    assert e.value.code == 2 and "max_examples must be a positive number" in capsys.readouterr().err
    if os.geteuid() == 0:  # a full disk (a tmpfs only root can mount) with room for the evaluations, not the pictures
        full_disk_leaves_no_truncated_picture(analyze_checkpoint, argv, out, tmp_path / "full", capsys)


def full_disk_leaves_no_truncated_picture(analyze_checkpoint, argv, out, mnt, capsys):
    import shutil
    import subprocess
    evals = sum(f.stat().st_size for f in (out / "evals").rglob("*") if f.is_file())
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={evals + (96 << 10)}", "tmpfs", str(mnt)], check=True)
    try:
        shutil.copytree(out / "evals", mnt / "evals")
        with pytest.raises(SystemExit) as e:
            analyze_checkpoint.main([*argv[:1], f"out={mnt}", *argv[2:]])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and err[-1].startswith("error: no space left on device") and "Traceback" not in "".join(err)
        assert not [p.name for p in mnt.iterdir() if p.name != "evals"]  # no picture cut short or left without its report
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.slow
def test_analyze_saved_preds_alone_joined_with_the_run_test_split(trained_hrm, tmp_path, capsys):
    """A run's preds-only output file, read against the test split its all_config.yaml names."""
    import shutil

    import evaluate
    from scripts import analyze_checkpoint
    ck, logged = trained_hrm
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ck / "all_config.yaml", run / "all_config.yaml")
    evaluate.run(evaluate.EvalConfig(checkpoint=f"{ck}/step_12", save_outputs=["preds"], output_dir=str(run)))
    analyze_checkpoint.main([f"outputs={run}/step_12_all_preds.0", f"out={tmp_path / 'report'}"])
    res = json.loads((tmp_path / "report" / "results.json").read_text())
    assert res["examples"]["test"] == 16 and res["exact_accuracy"]["test"] == pytest.approx(logged[12]["exact_accuracy"])
    assert res["memorisation"]["uninformative"] in (True, False) and "baseline" in capsys.readouterr().out
    assert "| test exact accuracy |" in (tmp_path / "report" / "report.md").read_text()

    (run / "all_config.yaml").unlink()
    with pytest.raises(SystemExit) as e:
        analyze_checkpoint.main([f"outputs={run}/step_12_all_preds.0", f"out={tmp_path / 'report'}"])
    assert e.value.code == 2 and "no all_config.yaml beside it" in capsys.readouterr().err


def test_analyze_checkpoint_bad_input_leaves_no_out_folder(trained_hrm, tmp_path, capsys):
    """A checkpoint that does not open (missing, crafted) or an out= that is a file: one line,
    exit 2, and no empty out= folder left behind."""
    from conftest import malicious_checkpoint
    from scripts import analyze_checkpoint
    ck, _ = trained_hrm
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "all_config.yaml").write_text((ck / "all_config.yaml").read_text())
    malicious_checkpoint(tmp_path / "run" / "step_1", tmp_path / "pwned")
    (tmp_path / "file.txt").write_text("x")
    for argv, message in (([f"checkpoint={tmp_path / 'nosuch'}", f"out={tmp_path / 'a' / 'b'}"], "no such file"),
                          ([f"checkpoint={tmp_path / 'run' / 'step_1'}", f"out={tmp_path / 'a'}"], "refused to load"),
                          ([f"checkpoint={ck}/step_12", f"out={tmp_path / 'file.txt'}"], "a file is in the way; give a folder")):
        with pytest.raises(SystemExit) as e:
            analyze_checkpoint.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "run"] and not (tmp_path / "pwned").exists()
    analyze_checkpoint.main(["--help"])
    assert "Options (key=value):" in capsys.readouterr().out
