"""evaluate.py reproduces the metrics the training run logged, loads compiled-prefixed checkpoints,
runs longer at test time on request, and names the problem on bad input."""
import json
import sys

import pytest
import torch

from conftest import REPO, TINY_HRM, load_weights, malicious_checkpoint, pretrain, run, torchrun

EVAL = [sys.executable, str(REPO / "evaluate.py")]


@pytest.fixture
def trained(trained_hrm):
    return trained_hrm


def printed_metrics(stdout):
    return json.loads(stdout[stdout.index("{"):])["all"]


@pytest.mark.slow
def test_reproduces_logged_metrics_and_saves_outputs(trained):
    ck, logged = trained
    out = run([*EVAL, f"checkpoint={ck}/step_6"]).stdout
    assert printed_metrics(out) == pytest.approx(logged[6], rel=1e-6)
    preds = torch.load(ck / "step_6_all_preds.0", weights_only=True)
    assert set(preds) == {"inputs", "labels", "puzzle_identifiers", "logits", "q_halt_logits", "q_continue_logits"}
    assert preds["logits"].shape == (16, 16, 6)


@pytest.mark.slow
def test_two_processes_give_the_same_metrics(trained):
    ck, logged = trained
    out = torchrun("--nproc-per-node", "2", str(REPO / "evaluate.py"), f"checkpoint={ck}/step_12", "save_outputs=[preds]").stdout
    assert printed_metrics(out) == pytest.approx(logged[12], rel=1e-5)
    assert torch.load(ck / "step_12_all_preds.1", weights_only=True)["preds"].shape == (8, 16)


@pytest.mark.slow
def test_compiled_prefix_checkpoint_loads(trained, tmp_path):
    ck, logged = trained
    prefixed = {"_orig_mod." + k: v for k, v in load_weights(ck / "step_12").items()}
    (tmp_path / "all_config.yaml").write_text((ck / "all_config.yaml").read_text())
    torch.save(prefixed, tmp_path / "step_12")
    assert printed_metrics(run([*EVAL, f"checkpoint={tmp_path}/step_12"]).stdout) == pytest.approx(logged[12], rel=1e-6)


@pytest.mark.slow
def test_more_segments_at_test_time(trained):
    ck, _ = trained
    out = run([*EVAL, f"checkpoint={ck}/step_12", "halt_max_steps=5", "save_outputs=[]"]).stdout
    assert "halt_max_steps=5" in out and printed_metrics(out)["steps"] == 5.0


@pytest.mark.slow
def test_missing_config_and_misfit_checkpoint(trained, tmp_path):
    ck, _ = trained
    torch.save(load_weights(ck / "step_12"), tmp_path / "step_12")
    proc = run([*EVAL, f"checkpoint={tmp_path}/step_12"], check=False)
    assert proc.returncode == 2 and "no all_config.yaml next to it" in proc.stderr and "Traceback" not in proc.stderr

    (tmp_path / "all_config.yaml").write_text((ck / "all_config.yaml").read_text().replace("hidden_size: 32", "hidden_size: 64"))
    proc = run([*EVAL, f"checkpoint={tmp_path}/step_12"], check=False)
    assert proc.returncode == 2 and "does not fit the model" in proc.stderr and "model.inner.lm_head.weight (6, 32) vs model (6, 64)" in proc.stderr

    proc = run([*EVAL, f"checkpoint={tmp_path}/step_99"], check=False)
    assert proc.returncode == 2 and "step_99: no such file" in proc.stderr


# ----------------------------------------------------------------------------------------------
# Analysis options: split, max_examples, puzzle_id_ablation, halt_max_steps lists, steps / trace


def evaluate_in_process(**options):
    import evaluate
    return evaluate.run(evaluate.EvalConfig(**options))


@pytest.mark.slow
def test_max_examples_same_subset_on_one_and_two_processes(trained, sudoku4, tmp_path):
    import numpy as np

    from utils.outputs import load_outputs
    ck, _ = trained
    common = [f"checkpoint={ck}/step_12", "max_examples=6", "save_outputs=[inputs,labels,preds]"]
    one = evaluate_in_process(checkpoint=f"{ck}/step_12", max_examples=6, save_outputs=["inputs", "labels", "preds"],
                              output_dir=str(tmp_path / "one"))
    out = torchrun("--nproc-per-node", "2", str(REPO / "evaluate.py"), *common, f"output_dir={tmp_path / 'two'}").stdout
    assert printed_metrics(out) == pytest.approx(one["all"], rel=1e-6)
    a, b = load_outputs(str(tmp_path / "one")), load_outputs(str(tmp_path / "two"))
    first6 = np.load(sudoku4 / "test" / "all__inputs.npy")[:6]
    np.testing.assert_array_equal(a["inputs"], first6)  # the first 6 examples in file order ...
    np.testing.assert_array_equal(b["inputs"], first6)  # ... on 2 processes too (rank 1's padding rows dropped)
    np.testing.assert_array_equal(a["preds"], b["preds"])


def test_split_train_uses_the_train_split_and_trace_ends_at_the_prediction(trained, sudoku4, tmp_path):
    import numpy as np

    from utils.outputs import load_outputs
    ck, _ = trained
    evaluate_in_process(checkpoint=f"{ck}/step_12", split="train", max_examples=10, save_outputs=["inputs", "preds"], trace=True,
                        output_dir=str(tmp_path), save_npy=True)
    out = load_outputs(str(tmp_path), drop_padding=False)
    # 10 examples in a batch of 16: the 6 padding rows are not saved
    np.testing.assert_array_equal(out["inputs"], np.load(sudoku4 / "train" / "all__inputs.npy")[:10])
    assert out["trace"].shape == (10, 3, 16) and out["trace_q_halt_logits"].shape == (10, 3)
    # The halt confidence is the rule the model halts by: its first segment above 0.5 is `steps`.
    confident = out["trace_halt_confidence"] > 0.5
    np.testing.assert_array_equal(np.where(confident.any(1), confident.argmax(1) + 1, 3), out["steps"])
    np.testing.assert_array_equal(out["halt_confidence"], out["trace_halt_confidence"][:, -1])
    np.testing.assert_array_equal(out["trace"][:, -1], out["preds"])
    assert out["steps"].min() >= 1 and out["steps"].max() <= 3
    assert np.load(tmp_path / "step_12_all_preds.0.trace.npy").shape == (10, 3, 16)
    assert not (tmp_path / "step_12_all_preds.0.logits.npy").exists()


def test_halt_max_steps_list_equals_separate_runs(trained, tmp_path):
    ck, _ = trained
    both = evaluate_in_process(checkpoint=f"{ck}/step_12", halt_max_steps=[1, 4], save_outputs=["preds"], output_dir=str(tmp_path))
    for value in (1, 4):
        alone = evaluate_in_process(checkpoint=f"{ck}/step_12", halt_max_steps=value, save_outputs=[], output_dir=str(tmp_path / "x"))
        assert both[value] == alone and alone["all"]["steps"] == value
        assert (tmp_path / f"halt_max_steps_{value}" / "step_12_all_preds.0").is_file()


def test_puzzle_id_ablation_changes_what_the_model_sees(trained, sudoku4, tmp_path):
    """Every identifier reaching the model is the blank one (blank) or a different one, the same for
    the same identifier and seed (random); evaluators and saved outputs keep the real ones."""
    import shutil

    import numpy as np
    import yaml

    from dataset.common import save_identifiers
    from inference.evaluation import load_evaluation
    from training.config import parse_config
    from training.state import init_train_state
    from training.checkpointing import model_weights
    from utils.functions import unwrap_compiled
    from utils.distributed import init_distributed
    from utils.outputs import load_outputs
    ck, _ = trained
    data = shutil.copytree(sudoku4, tmp_path / "data")
    for split in ("train", "test"):  # 5 named puzzles instead of the blank identifier
        ids = np.load(data / split / "all__puzzle_identifiers.npy")
        np.save(data / split / "all__puzzle_identifiers.npy", (np.arange(len(ids)) % 5 + 1).astype(ids.dtype))
        meta = json.loads((data / split / "dataset.json").read_text())
        (data / split / "dataset.json").write_text(json.dumps(dict(meta, num_puzzle_identifiers=6)))
    save_identifiers(str(data), ["<blank>"] + [f"p{i}" for i in range(5)])
    raw = yaml.safe_load((ck / "all_config.yaml").read_text())
    raw.update(data_path=str(data), data_paths=[str(data)], checkpoint_path=str(tmp_path / "ck"))
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "all_config.yaml").write_text(yaml.dump(raw))
    from puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
    meta = PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=[str(data)], global_batch_size=8, test_set_mode=False,
                                             epochs_per_iter=1, rank=0, num_replicas=1), "train").metadata
    torch.save(model_weights(init_train_state(parse_config(raw), meta).model), tmp_path / "ck" / "step_0")

    ev = load_evaluation(str(tmp_path / "ck" / "step_0"), init_distributed())
    seen = []
    unwrap_compiled(ev.model).model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["batch"]["puzzle_identifiers"].clone()), with_kwargs=True)
    real = np.load(data / "test" / "all__puzzle_identifiers.npy")

    def run(mode, seed=0):
        seen.clear()
        ev.run(puzzle_id_ablation=mode, ablation_seed=seed, save_outputs=["puzzle_identifiers"], output_dir=str(tmp_path / mode))
        assert len(seen) == 2 * 3  # 2 batches x halt_max_steps segments
        return torch.cat(seen[::3]).numpy()

    np.testing.assert_array_equal(run("none"), real)
    assert set(run("blank").tolist()) == {0}
    np.testing.assert_array_equal(load_outputs(str(tmp_path / "blank"))["puzzle_identifiers"], real)  # saved: the real ones
    shuffled = run("random")
    assert np.all(shuffled != real) and np.all(shuffled >= 1)
    mapping = {}
    for r, s in zip(real.tolist(), shuffled.tolist()):
        assert mapping.setdefault(r, s) == s  # one replacement per identifier
    np.testing.assert_array_equal(run("random"), shuffled)


def test_malicious_or_random_checkpoint_runs_nothing_and_is_one_line(trained, tmp_path, capsys):
    import evaluate
    ck, _ = trained
    (tmp_path / "all_config.yaml").write_text((ck / "all_config.yaml").read_text())
    marker = tmp_path / "pwned"
    malicious_checkpoint(tmp_path / "step_12", marker)
    (tmp_path / "step_13").write_bytes((ck / "step_12").read_bytes()[:5000])  # cut off while copying
    for name, message in (("step_12", "refused to load: the file holds Python objects"), ("step_13", "the file is truncated")):
        with pytest.raises(SystemExit) as e:
            evaluate.main([f"checkpoint={tmp_path / name}"])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith(f"error: checkpoint={tmp_path / name}: {message}") and "\n" not in err
    assert not marker.exists()


def test_bad_output_dir_or_run_config_is_one_line_before_loading(trained, tmp_path, capsys):
    """output_dir that is a file or cannot be made, and an all_config.yaml that is not YAML, a
    list or empty: one line each, exit 2, nothing written."""
    import shutil

    import evaluate
    ck, _ = trained
    (tmp_path / "file.txt").write_text("x")
    cases = [([f"checkpoint={ck}/step_12", f"output_dir={tmp_path / 'file.txt'}"], f"output_dir={tmp_path / 'file.txt'}: a file is in the way"),
             ([f"checkpoint={ck}/step_12", "output_dir=/proc/x"], "output_dir=/proc/x: cannot write in /proc")]
    for name, text, message in (("invalid", "arch: [\n", "not readable as a run's config (invalid YAML at line 2)"),
                                ("list", "- a\n", "not a run's config (expected a mapping of config keys, got list)"),
                                ("empty", "", "not a run's config (expected a mapping of config keys, got an empty file)")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "all_config.yaml").write_text(text)
        shutil.copy(ck / "step_12", tmp_path / name / "step_12")
        cases.append(([f"checkpoint={tmp_path / name / 'step_12'}"], f"{tmp_path / name / 'all_config.yaml'}: {message}"))
    before = sorted(p for p in tmp_path.rglob("*"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            evaluate.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert sorted(p for p in tmp_path.rglob("*")) == before
