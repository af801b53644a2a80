"""Test-time adaptation (inference/adaptation.py): which demonstrations each protocol trains on,
that an adaptation step is training's own step, what each mode changes, that the checkpoint file
is never written and that a saved adapted model evaluates as the one in memory; evaluate.py's
``adapt=`` options."""
import hashlib
import json
import os
import re
import sys
from itertools import islice

import numpy as np
import pytest
import torch

from conftest import TINY_HRM, load_split, run, train_in_process

EMB = "model.inner.puzzle_emb.weights"


def _task(rng, rule, shape):
    """Three demonstrations and one test pair of small grids: mirrored left-right, or every colour made 5."""
    pairs = []
    for _ in range(4):
        x = rng.integers(0, 4, size=shape)
        pairs.append({"input": x.tolist(), "output": (np.fliplr(x) if rule == "flip" else np.where(x > 0, 5, 0)).tolist()})
    return {"train": pairs[:3], "test": pairs[3:]}


@pytest.fixture(scope="module")
def arc_tasks(tmp_path_factory):
    """Two categories of four tasks each: 1-row and 2-D grids up to 3x4 (a fitted canvas of 4x5)."""
    root = tmp_path_factory.mktemp("adapt") / "tasks"
    rng = np.random.default_rng(0)
    for rule in ("flip", "recolor"):
        (root / rule).mkdir(parents=True)
        for k, shape in enumerate([(1, 4), (2, 3), (3, 4), (2, 2)]):
            (root / rule / f"{rule}_{k}.json").write_text(json.dumps(_task(rng, rule, shape)))
    return root


def _build(tasks, out, protocol):
    from dataset.build_arc_dataset import ARCBuildConfig, build_arc_dataset
    build_arc_dataset(ARCBuildConfig(dataset_dirs=[str(tasks)], output_dir=str(out), num_aug=3, canvas="fit", protocol=protocol))
    return out


@pytest.fixture(scope="module")
def arc_run(arc_tasks):
    """A tiny HRM trained in this process on the seen tasks of an ``--protocol unseen`` dataset:
    ``(dataset folder, checkpoint file)``."""
    data = _build(arc_tasks, arc_tasks.parent / "unseen", "unseen")
    return data, train_in_process(data, data.parent / "ck", "epochs=10", "eval_interval=10", "global_batch_size=8", "lr=3e-3",
                                  "lr_warmup_steps=1", *TINY_HRM, "+run_name=adapt")


def _evaluation(checkpoint):
    from inference.evaluation import load_evaluation
    from utils.distributed import DistInfo
    return load_evaluation(str(checkpoint), DistInfo(rank=0, world_size=1, device=torch.device("cpu")))


def _weights(model):
    from training.checkpointing import model_weights
    return {k: v.clone() for k, v in model_weights(model).items()}


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ---- which demonstrations


def test_unseen_protocol_adapts_on_the_held_out_tasks_demonstrations(arc_run):
    from inference.adaptation import evaluation_demonstrations

    data, ck = arc_run
    ev = _evaluation(ck)
    demos = evaluation_demonstrations(ev, None, seed=0)
    test, train = load_split(data, "test"), load_split(data, "train")
    names = json.loads((data / "identifiers.json").read_text())
    held_out = json.loads((data / "test" / "dataset.json").read_text())["held_out_tasks"]
    assert sorted(demos.tasks) == sorted(held_out) and len(held_out) == 2  # a quarter of each category
    assert set(demos.identifiers.tolist()) == set(test["puzzle_identifiers"].tolist())  # the dataset's own versions
    assert not set(demos.identifiers.tolist()) & set(train["puzzle_identifiers"].tolist())  # never trained on
    assert len(demos) == 3 * len(set(demos.identifiers.tolist()))  # three demonstrations per version
    # The plain version's rows hold the task's demonstration grids (colours as tokens 2..11), not its test pair.
    raw = json.loads((data / "test_puzzles.json").read_text())
    task = held_out[0]
    plain = [i for i, n in enumerate(names) if n == task]
    rows = demos.batch(np.flatnonzero(demos.identifiers == plain[0]), "cpu")
    cells = sorted(sorted(int(t) - 2 for t in row if t >= 2) for row in rows["inputs"].numpy())
    assert cells == sorted(sorted(v for line in pair["input"] for v in line) for pair in raw[task]["train"])


def test_hrm_protocol_adapts_on_the_train_split_rows_of_the_test_puzzles(arc_tasks, tmp_path):
    from inference.adaptation import test_split_identifiers, train_split_demonstrations

    data = _build(arc_tasks, tmp_path / "hrm", "hrm")
    train = load_split(data, "train")
    ids = test_split_identifiers(str(data / "test"), None)
    demos = train_split_demonstrations(str(data), ids)
    expected = np.concatenate([np.arange(train["puzzle_indices"][p], train["puzzle_indices"][p + 1])
                               for p in range(len(train["puzzle_identifiers"])) if train["puzzle_identifiers"][p] in set(ids)])
    assert len(demos.tasks) == 8 and np.array_equal(demos.rows, expected)
    batch = demos.batch(np.arange(len(demos)), "cpu")
    assert np.array_equal(batch["inputs"].numpy(), train["inputs"][expected])  # exactly what training saw
    # max_examples: only the tasks of the first examples evaluated
    first = test_split_identifiers(str(data / "test"), 1)
    assert len(first) == 1 and first[0] == load_split(data, "test")["puzzle_identifiers"][0]


# ---- the step is training's step


@pytest.mark.parametrize("mode", ["full", "embedding"])
def test_adaptation_steps_are_training_steps_bit_for_bit(arc_run, mode):
    """Three adaptation steps equal three steps of a training run set up by training's own code
    (init_train_state from the checkpoint, with the adaptation's learning rates and batch) on the same batches."""
    import training.state
    from inference import adaptation
    from training.config import parse_config
    from training.state import init_train_state, train_batch

    assert adaptation.train_batch is training.state.train_batch
    data, ck = arc_run
    ev = _evaluation(ck)
    settings = adaptation.AdaptSettings(mode=mode, steps=3, lr=2e-3, batch=4, seed=5)
    demos = adaptation.evaluation_demonstrations(ev, None, settings.seed)
    adaptation.adapt_model(ev.model, ev.opened.run_config, demos, settings, batch_size=8, progress=False)

    run_config = ev.opened.run_config
    lrs = {"lr": 2e-3, "puzzle_emb_lr": run_config["puzzle_emb_lr"] * 2e-3 / run_config["lr"]} if mode == "full" else \
        {"puzzle_emb_lr": 2e-3}
    raw = {**run_config, **lrs, "lr_warmup_steps": 0, "lr_min_ratio": 1.0, "global_batch_size": 4, "load_checkpoint": str(ck),
           "freeze_weights": mode == "embedding", "ema": False, "checkpoint_path": None, "eval_interval": None}
    config = parse_config(raw)
    state = init_train_state(config, ev.metadata, world_size=1, device="cpu")
    state.model.train()
    torch.manual_seed(settings.seed)
    for picked in islice(demos.draws(4, settings.seed), 3):
        train_batch(config, state, demos.batch(picked, "cpu"), 4, rank=0, world_size=1)
    adapted, trained = _weights(ev.model), _weights(state.model)
    assert adapted.keys() == trained.keys()
    for key in adapted:
        assert torch.equal(adapted[key], trained[key]), key


# ---- what each mode changes


def test_full_adaptation_learns_the_demonstrations_and_never_writes_the_checkpoint(arc_run):
    from inference.adaptation import AdaptSettings, adapt_evaluation

    _, ck = arc_run
    digest, listing = _digest(ck), sorted(os.listdir(ck.parent))
    ev = _evaluation(ck)
    before = _weights(ev.model)
    report = adapt_evaluation(ev, AdaptSettings(mode="full", steps=40, lr=3e-3), progress=False)
    after = _weights(ev.model)
    assert report.after["loss"] < report.before["loss"] and report.rows == 2 * 4 * 3  # 2 tasks x 4 versions x 3 pairs
    assert report.before["rows"] == report.rows and 0 <= report.after["exact_accuracy"] <= 1
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert EMB in changed and len(changed) > len(before) // 2  # the weights learn too
    assert _digest(ck) == digest and sorted(os.listdir(ck.parent)) == listing
    assert not ev.model.training and all(p.requires_grad for p in ev.model.parameters())  # left as it was


def test_embedding_adaptation_changes_only_the_adapted_tasks_rows(arc_run):
    from inference.adaptation import AdaptSettings, adapt_evaluation, evaluation_demonstrations

    _, ck = arc_run
    ev = _evaluation(ck)
    before = _weights(ev.model)
    local = ev.model.model.inner.puzzle_emb.local_weights
    report = adapt_evaluation(ev, AdaptSettings(mode="embedding", steps=10, batch=6), progress=False)
    after = _weights(ev.model)
    assert [k for k in before if not torch.equal(before[k], after[k])] == [EMB]
    moved = torch.nonzero((before[EMB] != after[EMB]).any(dim=1)).flatten().tolist()
    adapted = set(evaluation_demonstrations(ev, None, 0).identifiers.tolist())
    assert moved and set(moved) <= adapted
    assert report.lr == ev.opened.run_config["puzzle_emb_lr"] and report.batch == 6 and report.after["loss"] < report.before["loss"]
    assert ev.model.model.inner.puzzle_emb.local_weights is local  # the per-batch rows sized for evaluation again


def test_saved_adapted_model_evaluates_as_the_one_in_memory(arc_run, tmp_path):
    from inference.adaptation import AdaptSettings, adapt_evaluation, save_adapted

    _, ck = arc_run
    ev = _evaluation(ck)
    report = adapt_evaluation(ev, AdaptSettings(mode="full", steps=5), progress=False)
    saved = save_adapted(str(tmp_path / "adapted"), ev.opened, report)
    assert sorted(os.listdir(tmp_path)) == ["adapted"]  # no temporary folder left
    assert json.loads((tmp_path / "adapted" / "adaptation.json").read_text())["checkpoint"] == str(ck)
    in_memory = ev.run(output_dir=str(tmp_path / "a"), save_outputs=["preds"])
    reloaded = _evaluation(saved).run(output_dir=str(tmp_path / "b"), save_outputs=["preds"])
    assert in_memory == reloaded and "ARC/pass@2" in in_memory
    a, b = (torch.load(tmp_path / d / f"{ck.name}_all_preds.0") for d in ("a", "b"))
    assert torch.equal(a["preds"], b["preds"])
    with pytest.raises(ValueError, match="already holds files"):
        save_adapted(str(tmp_path / "adapted"), ev.opened, report)


# ---- evaluate.py


def test_evaluate_rejects_bad_adaptation_options_in_one_line(arc_run, tmp_path, capsys):
    import evaluate

    _, ck = arc_run
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    for args, message in [(["adapt=full"], "adapt=full: give adapt_steps=N"),
                          (["adapt=full", "adapt_steps=-3"], "adapt_steps: Input should be greater than or equal to 0"),
                          (["adapt=sideways", "adapt_steps=3"], "adapt: Input should be 'none', 'embedding' or 'full'"),
                          (["adapt=none", "adapt_lr=0.1"], "adapt_lr=: nothing is adapted with adapt=none"),
                          (["adapt=full", "adapt_steps=3", "split=train"], "use split=test"),
                          (["adapt=full", "adapt_steps=3", f"adapt_save={tmp_path / 'full'}"], "already holds files"),
                          (["adapt=full", "adapt_steps=3", f"checkpoint=[{ck},{ck}]"], "adapts one checkpoint")]:
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main([f"checkpoint={ck}", *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, (args, err)


def test_evaluate_refuses_adaptation_for_a_task_without_demonstrations(trained_hrm, capsys):
    import evaluate

    ck, _ = trained_hrm
    step = sorted(f for f in os.listdir(ck) if re.fullmatch(r"step_\d+", f))[-1]
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([f"checkpoint={ck / step}", "adapt=full", "adapt_steps=2", f"output_dir={ck.parent / 'never'}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "only ARC datasets carry (this checkpoint's task: sudoku)" in err


@pytest.mark.slow
def test_evaluate_command_line_adapts_reports_and_saves(arc_run, tmp_path):
    _, ck = arc_run
    digest = _digest(ck)
    out = run([sys.executable, "evaluate.py", f"checkpoint={ck}", "adapt=full", "adapt_steps=6", "adapt_batch=4",
               f"adapt_save={tmp_path / 'adapted'}"])
    line = re.search(r"^adapt=full: 6 steps \(lr 0\.003, batch 4\) on 24 demonstration rows of 2 task\(s\) in [\d.]+ s: "
                     r"demonstration loss ([\d.]+) -> ([\d.]+), exact accuracy [\d.]+% -> [\d.]+% \(on 24 rows\); saved as (\S+)$",
                     out.stdout, re.M)
    assert line, out.stdout
    metrics = json.loads(out.stdout[out.stdout.index("\n{") + 1:])
    adaptation = metrics["adaptation"]
    assert (adaptation["mode"], adaptation["steps"], adaptation["batch"]) == ("full", 6, 4)
    assert f"{adaptation['before']['loss']:.4f}" == line.group(1) and f"{adaptation['after']['loss']:.4f}" == line.group(2)
    assert line.group(3) == str(tmp_path / "adapted" / ck.name) and _digest(ck) == digest
    assert (tmp_path / "adapted" / f"{ck.name}_all_preds.0").is_file()  # the adapted model's outputs beside it
