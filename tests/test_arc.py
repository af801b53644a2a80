"""The ARC evaluator (evaluators/arc.py) on a real dataset built from synthetic tasks.

(The crop it applies, ``crop_arc_grid``, is checked against the original scan in test_build_arc_dataset.py.)"""
import json
import sys

import numpy as np
import pytest
import torch

from conftest import run
from dataset.common import load_metadata
from evaluators.arc import ARC


@pytest.fixture(scope="module")
def arc_data(tmp_path_factory):
    """Four synthetic tasks (flip / recolour); two of them are the evaluation (test) subset."""
    root = tmp_path_factory.mktemp("arc")
    rng = np.random.default_rng(1)

    def task(kind):
        def pair(h, w):
            x = rng.integers(0, 10, size=(h, w))
            y = np.fliplr(x) if kind == "flip" else np.where(x == 0, 5, x)
            return {"input": x.tolist(), "output": y.tolist()}
        return {"train": [pair(3, 4), pair(4, 3), pair(2, 5)], "test": [pair(3, 3), pair(4, 4)]}

    subsets = {"training": {"t_flip": task("flip"), "t_col": task("col")}, "evaluation": {"e_flip": task("flip"), "e_col": task("col")}}
    for subset, tasks in subsets.items():
        (root / f"arc-agi_{subset}_challenges.json").write_text(json.dumps(
            {n: {"train": t["train"], "test": [{"input": p["input"]} for p in t["test"]]} for n, t in tasks.items()}))
        (root / f"arc-agi_{subset}_solutions.json").write_text(json.dumps({n: [p["output"] for p in t["test"]] for n, t in tasks.items()}))
    out = root / "data"
    run([sys.executable, "-m", "dataset.build_arc_dataset", "--input-file-prefix", str(root / "arc-agi"), "--output-dir", str(out),
         "--subsets", "training", "evaluation", "--test-set-name", "evaluation", "--num-aug", "3"])
    test = {k: np.load(out / "test" / f"all__{k}.npy") for k in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices")}
    puzzle_of = np.searchsorted(test["puzzle_indices"], np.arange(len(test["inputs"])), side="right") - 1
    batch = {"inputs": torch.from_numpy(test["inputs"].astype(np.int32)),
             "puzzle_identifiers": torch.from_numpy(test["puzzle_identifiers"][puzzle_of].astype(np.int32))}
    return out, batch, torch.from_numpy(test["labels"].astype(np.int64))


def evaluator(out):
    return ARC(data_path=str(out), eval_metadata=load_metadata(str(out / "test")))


def corrupt(labels, rows, cells=None):
    """Predictions whose (augmented) grid has another colour at ``cells`` (default: the top-left cell)."""
    cells = torch.zeros_like(rows) if cells is None else cells
    wrong = labels.clone()
    wrong[rows, cells] = torch.where(wrong[rows, cells] == 2, 3, 2)
    return wrong


def score(ev, batch, preds, q=None, save_path=None):
    q = torch.zeros(len(preds)) if q is None else q
    ev.begin_eval()
    ev.update_batch(batch, {"preds": preds, "q_halt_logits": q})
    return ev.result(save_path, rank=0, world_size=1)


@pytest.mark.slow
def test_right_predictions_score_one_and_write_submission(arc_data, tmp_path):
    out, batch, labels = arc_data
    ev = evaluator(out)
    result = score(ev, batch, labels, save_path=str(tmp_path))
    assert result["ARC/pass@1"] == 1.0 and result["ARC/pass@1000"] == 1.0
    submission = json.loads((tmp_path / "submission.json").read_text())
    truth = json.loads((out / "test_puzzles.json").read_text())
    assert set(submission) == {"e_flip", "e_col"}
    for name, attempts in submission.items():
        assert [a["attempt_1"] for a in attempts] == [p["output"] for p in truth[name]["test"]]


@pytest.mark.slow
def test_wrong_predictions_score_zero_and_each_evaluation_starts_clean(arc_data):
    out, batch, labels = arc_data
    ev = evaluator(out)
    assert score(ev, batch, labels)["ARC/pass@1"] == 1.0
    # A second evaluation with wrong answers must not see the first one's votes.
    result = score(ev, batch, corrupt(labels, torch.arange(len(labels))))
    assert result["ARC/pass@1"] == 0.0 and result["ARC/pass@1000"] == 0.0


def version_index(names):
    """0 for an original puzzle, 1.. for its augmented versions in order of appearance."""
    seen = {}
    out = []
    for name in names:
        versions = seen.setdefault(name.split("|||")[0], [])
        if name not in versions:
            versions.append(name)
        out.append(versions.index(name))
    return torch.tensor(out)


@pytest.mark.slow
def test_voting_over_augmented_copies(arc_data):
    out, batch, labels = arc_data
    ev = evaluator(out)
    version = version_index([ev.identifier_map[i] for i in batch["puzzle_identifiers"].tolist()])
    originals, copies = version == 0, version > 0
    assert int(version.max()) == 3  # each test input appears in 4 versions (original + 3 augmentations)

    # 3 of 4 versions right: the right grid wins on votes, even though the wrong one is more confident.
    q = torch.where(originals, 5.0, -5.0)
    assert score(ev, batch, corrupt(labels, originals.nonzero()[:, 0]), q)["ARC/pass@1"] == 1.0

    # Only the originals right; version k gets its first k cells wrong, so after mapping back the
    # wrong grids are all different (a bijection keeps the number of wrong cells): every candidate
    # has one vote and the mean sigmoid(q_halt) decides the order.
    preds = labels.clone()
    for row in copies.nonzero()[:, 0].tolist():
        preds = corrupt(preds, torch.full((int(version[row]),), row), cells=torch.arange(int(version[row])))
    q = torch.where(originals, -5.0, 5.0)
    result = score(ev, batch, preds, q)
    assert result["ARC/pass@1"] == 0.0 and result["ARC/pass@2"] == 0.0 and result["ARC/pass@5"] == 1.0
    assert score(ev, batch, preds, -q)["ARC/pass@1"] == 1.0  # now the right grid is the most confident


def test_non_arc_data_disables_the_evaluator_once(tmp_path, capsys):
    from dataset.common import PuzzleDatasetMetadata
    meta = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=81,
                                 num_puzzle_identifiers=1, total_groups=1, mean_puzzle_examples=1, sets=["all"])
    ev = ARC(data_path=str(tmp_path), eval_metadata=meta)
    ev.begin_eval()
    ev.update_batch({"inputs": torch.zeros(1, 81)}, {"preds": torch.zeros(1, 81)})
    assert ev.result(None, rank=0, world_size=1) is None
    assert capsys.readouterr().out.count("evaluator disabled") == 1


def test_task_scores_per_task(arc_data):
    out, batch, labels = arc_data
    ev = evaluator(out)
    names = np.array(ev.identifier_map)[batch["puzzle_identifiers"].numpy()]
    flip = torch.from_numpy(np.char.startswith(names.astype(str), "e_flip"))
    ev.begin_eval()
    ev.update_batch(batch, {"preds": corrupt(labels, torch.nonzero(flip)[:, 0]), "q_halt_logits": torch.zeros(len(labels))})
    scores = ev.task_scores()
    assert scores == {"e_flip": {f"pass@{k}": 0.0 for k in ev.pass_Ks}, "e_col": {f"pass@{k}": 1.0 for k in ev.pass_Ks}}


def test_views_count_the_votes_of_the_original_loop(arc_data, tmp_path):
    """Mapping predictions back with the copies' views gives the votes the original's per-copy loop
    (crop, then inverse_aug) gave, so scores and submission.json are unchanged."""
    from dataset.arc_grid import crop_arc_grid, grid_hash, inverse_aug
    out, batch, labels = arc_data
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 12, labels.shape, generator=g)
    preds = torch.where(torch.rand(labels.shape, generator=g) < 0.01, noise, labels)  # odd crops included
    q = torch.randn(len(preds), generator=g)
    ours = evaluator(out)
    scores = score(ours, batch, preds, q, save_path=str(tmp_path / "ours"))
    reference = evaluator(out)
    for identifier, inp, pred, q_value in zip(batch["puzzle_identifiers"].tolist(), batch["inputs"].numpy(), preds.numpy(),
                                              q.double().sigmoid().tolist()):
        name, undo = inverse_aug(reference.identifier_map[identifier])
        grid = undo(crop_arc_grid(pred))
        reference._local_hmap[grid_hash(grid)] = grid
        reference._local_preds.setdefault(name, {}).setdefault(grid_hash(undo(crop_arc_grid(inp))), []).append((grid_hash(grid), q_value))
    assert ours._local_preds == reference._local_preds
    assert reference.result(str(tmp_path / "reference"), rank=0, world_size=1) == scores
    assert (tmp_path / "ours" / "submission.json").read_text() == (tmp_path / "reference" / "submission.json").read_text()


def test_a_fitted_canvas_is_read_from_dataset_json(tmp_path):
    """1-D tasks on their fitted 2 x (N+1) canvas: each augmented copy's answer is cropped on that
    canvas and mapped back through its flip and colour map; right answers score 1, a wrong one 0."""
    from dataset.build_arc_dataset import ARCBuildConfig, build_arc_dataset
    raw = tmp_path / "raw" / "shift"
    raw.mkdir(parents=True)
    for k in range(3):
        def pair(start, width=8 + 3 * k):
            x = np.zeros((1, width), dtype=int)
            x[0, start:start + 2] = k + 1
            return {"input": x.tolist(), "output": np.roll(x, 1, axis=1).tolist()}
        (raw / f"shift_{k}.json").write_text(json.dumps({"train": [pair(0), pair(2)], "test": [pair(4)]}))
    out = tmp_path / "data"
    build_arc_dataset(ARCBuildConfig(dataset_dirs=[str(raw.parent)], output_dir=str(out), num_aug=6, canvas="fit",
                                     protocol="hrm"))
    ev = evaluator(out)
    assert (ev.canvas.height, ev.canvas.width) == (2, 15)
    test = {k: np.load(out / "test" / f"all__{k}.npy") for k in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices")}
    batch = {"inputs": torch.from_numpy(test["inputs"].astype(np.int32)),
             "puzzle_identifiers": torch.from_numpy(test["puzzle_identifiers"].astype(np.int32))}
    assert (np.diff(test["puzzle_indices"]) == 1).all()  # one test pair per version: row i is puzzle i
    names = json.loads((out / "identifiers.json").read_text())
    assert any("|||t4|||" in names[i] or "|||t2|||" in names[i] for i in test["puzzle_identifiers"])  # flipped copies
    labels = torch.from_numpy(test["labels"].astype(np.int64))
    assert score(ev, batch, labels)["ARC/pass@1"] == 1.0
    wrong = labels.clone()
    wrong[:, 0] = torch.where(wrong[:, 0] == 2, 3, 2)  # every copy's answer wrong in its first cell
    assert score(ev, batch, wrong)["ARC/pass@2"] == 0.0
