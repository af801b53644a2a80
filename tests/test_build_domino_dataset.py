"""The domino builder writes valid scenarios whose labels are the policy's move.

The checks below decode the arrays with their own code and find the policy's move with a plain
brute-force search (every order and side of every play, no memo), so they do not trust the
rules in dataset/domino.py that the builder itself uses.
"""
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDER = os.path.join(ROOT, "dataset", "build_domino_dataset.py")


def run_builder(*args, module=False):
    cmd = [sys.executable, "-m", "dataset.build_domino_dataset"] if module else [sys.executable, BUILDER]
    return subprocess.run(cmd + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def load_split(path, split):
    return {f: np.load(os.path.join(path, split, f"all__{f}.npy"))
            for f in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")}


# ----------------------------------------------------------------------------------------------
# Independent reading of the encoding and brute-force policies


def read_scenario(x):
    """(table as list of oriented tiles, hand as list of tiles, (left, right) tokens) from one row."""
    table = [(int(x[i]) - 1, int(x[i + 1]) - 1) for i in range(0, 56, 2) if x[i] or x[i + 1]]
    hand = [(int(x[i]) - 1, int(x[i + 1]) - 1) for i in range(56, 70, 2) if x[i] or x[i + 1]]
    return table, hand, (int(x[70]), int(x[71]))


def playable(chain, tile, side):
    """Can ``tile`` go at ``side`` (1 left, 2 right, 3 first) of ``chain``? Returns the new chain or None."""
    a, b = tile
    if not chain:
        return [(a, b)] if side == 3 else None
    if side == 1:
        end = chain[0][0]
        return [(b, a)] + chain if a == end else [(a, b)] + chain if b == end else None
    if side == 2:
        end = chain[-1][1]
        return chain + [(a, b)] if a == end else chain + [(b, a)] if b == end else None
    return None


def most_plays(chain, hand):
    """Largest number of tiles from ``hand`` playable one after another on ``chain``."""
    best = 0
    for i, tile in enumerate(hand):
        for side in (1, 2):
            new_chain = playable(chain, tile, side)
            if new_chain is not None:
                best = max(best, 1 + most_plays(new_chain, hand[:i] + hand[i + 1:]))
    return best


def brute_force_move(table, hand, policy):
    candidates = []
    for i, tile in enumerate(hand):
        for side in (1, 2, 3):
            new_chain = playable(table, tile, side)
            if new_chain is None:
                continue
            key = [-(tile[0] + tile[1]), side, tile[0], tile[1]]
            if policy == "max-chain":
                key.insert(0, -most_plays(new_chain, hand[:i] + hand[i + 1:]))
            candidates.append((key, (tile[0], tile[1], side)))
    assert candidates, "scenario without a legal move"
    return min(candidates)[1]


def check_split(data, policy):
    """Every example decodes, is consistent, and its label is the brute-force policy move."""
    x_all, y_all = data["inputs"], data["labels"]
    assert x_all.shape[1] == y_all.shape[1] == 72
    assert x_all.max() < 8 and y_all.max() < 8
    assert (y_all[:, 3:] == 0).all(), "labels beyond position 2 must be the ignore id"
    for n, (x, y) in enumerate(zip(x_all, y_all)):
        table, hand, ends = read_scenario(x)
        # slots are filled from the start and a filled slot has both halves
        pairs = x[:70].reshape(35, 2)
        assert ((pairs == 0).all(1) | (pairs != 0).all(1)).all(), n
        assert (pairs[:28] != 0).all(1).sum() == len(table) and (pairs[:len(table)] != 0).all(), n
        assert (pairs[28:28 + len(hand)] != 0).all(), n
        assert 1 <= len(hand) <= 7 and len(table) <= 28, n
        assert all(a <= b for a, b in hand), n
        assert all(table[i][1] == table[i + 1][0] for i in range(len(table) - 1)), f"broken chain in {n}"
        tiles = [tuple(sorted(t)) for t in table] + hand
        assert len(set(tiles)) == len(tiles), f"duplicate tile in {n}"
        assert ends == ((table[0][0] + 1, table[-1][1] + 1) if table else (0, 0)), f"ends of {n}"
        move = (int(y[0]) - 1, int(y[1]) - 1, int(y[2]))
        assert move[:2] in hand, f"label tile of {n} not in hand"
        assert playable(table, move[:2], move[2]) is not None, f"label of {n} is not legal"
        assert move == brute_force_move(table, hand, policy), f"example {n}: label is not the {policy} move"


# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("domino") / "data"
    result = run_builder("--output-dir", out, "--num-games", 300, "--num-aug", 2, "--seed", 5)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_metadata_and_files(built):
    assert json.load(open(built / "identifiers.json")) == ["<blank>"]
    assert json.load(open(built / "domino.json"))["policy"] == "max-chain"
    for split in ("train", "test"):
        meta = json.load(open(built / split / "dataset.json"))
        assert meta["seq_len"] == 72 and meta["vocab_size"] == 8 and meta["sets"] == ["all"]
        assert meta["pad_id"] == 0 and meta["ignore_label_id"] == 0 and meta["num_puzzle_identifiers"] == 1
        data = load_split(built, split)
        n = len(data["inputs"])
        assert meta["total_groups"] == len(data["group_indices"]) - 1 == 300
        assert (data["puzzle_indices"] == np.arange(n + 1)).all()
        assert (data["puzzle_identifiers"] == 0).all()
        assert data["group_indices"][0] == 0 and data["group_indices"][-1] == n
        assert (np.diff(data["group_indices"]) >= 1).all()
    # test is not augmented, train is (a renaming can rarely coincide with one already drawn)
    assert len(load_split(built, "test")["inputs"]) == 300
    assert 880 <= len(load_split(built, "train")["inputs"]) <= 900


@pytest.mark.slow
def test_dataset_json_records_the_task(built):
    for split in ("train", "test"):
        assert json.load(open(built / split / "dataset.json"))["task"] == "domino"


@pytest.mark.slow
def test_labels_are_the_max_chain_move(built):
    for split in ("train", "test"):
        check_split(load_split(built, split), "max-chain")


@pytest.mark.slow
def test_splits_are_disjoint_and_varied(built):
    train, test = load_split(built, "train")["inputs"], load_split(built, "test")["inputs"]
    assert not {r.tobytes() for r in train} & {r.tobytes() for r in test}
    assert len({r.tobytes() for r in test}) == len(test)
    table_len = (test[:, :56:2] != 0).sum(1)
    hand_size = (test[:, 56:70:2] != 0).sum(1)
    assert set(range(0, 11)) <= set(table_len.tolist()), "table lengths from real play should span 0..10+"
    assert set(hand_size.tolist()) == set(range(1, 8))


@pytest.mark.slow
def test_augmentation_renames_pips_and_recomputes_labels(built):
    data = load_split(built, "train")
    x, y, g = data["inputs"], data["labels"], data["group_indices"]
    label_would_be_wrong = 0
    for start, end in zip(g[:-1], g[1:]):
        assert end - start == 3
        table0, hand0, _ = read_scenario(x[start])
        for i in range(start + 1, end):
            table, hand, _ = read_scenario(x[i])
            assert len(table) == len(table0) and len(hand) == len(hand0)
            # one bijection of the pips maps the original table onto the copy ...
            mapping = {}
            for (l0, r0), (l, r) in zip(table0, table):
                for p0, p in ((l0, l), (r0, r)):
                    assert mapping.setdefault(p0, p) == p
            # ... and the hand too (as a set; extend the mapping over pips not on the table)
            found = False
            for perm in itertools.permutations(range(7)):
                if all(perm[k] == v for k, v in mapping.items()) and \
                        sorted(tuple(sorted((perm[a], perm[b]))) for a, b in hand0) == sorted(hand):
                    found = True
                    break
            assert found, f"train example {i} is not a pip renaming of {start}"
            # copying the original label through the renaming is not always right
            a, b = sorted((perm[y[start][0] - 1], perm[y[start][1] - 1]))
            if (a + 1, b + 1, y[start][2]) != tuple(y[i][:3]):
                label_would_be_wrong += 1
    assert label_would_be_wrong > 0


@pytest.mark.slow
def test_heaviest_policy_and_module_entry_point(tmp_path):
    result = run_builder("--output-dir", tmp_path / "h", "--num-games", 150, "--num-aug", 1,
                         "--policy", "heaviest", module=True)
    assert result.returncode == 0, result.stderr
    assert json.load(open(tmp_path / "h" / "domino.json"))["policy"] == "heaviest"
    for split in ("train", "test"):
        check_split(load_split(tmp_path / "h", split), "heaviest")


@pytest.mark.slow
def test_seed_reproduces_and_subsample(tmp_path, built):
    # same seed and options as the fixture, run again: identical files
    assert run_builder("--output-dir", tmp_path / "a", "--num-games", 300, "--num-aug", 2, "--seed", 5).returncode == 0
    for split in ("train", "test"):
        for name in os.listdir(built / split):
            assert (built / split / name).read_bytes() == (tmp_path / "a" / split / name).read_bytes(), name
    # another seed: other scenarios
    assert run_builder("--output-dir", tmp_path / "b", "--num-games", 300, "--seed", 6).returncode == 0
    assert not np.array_equal(load_split(tmp_path / "b", "test")["inputs"], load_split(built, "test")["inputs"])
    # subsampling keeps that many train scenarios and leaves test as it was
    assert run_builder("--output-dir", tmp_path / "c", "--num-games", 300, "--seed", 5,
                       "--subsample-size", 40).returncode == 0
    sub = load_split(tmp_path / "c", "train")
    assert len(sub["inputs"]) == 40 and len(sub["group_indices"]) == 41
    full_train = {r.tobytes() for r in load_split(built, "train")["inputs"]}
    assert {r.tobytes() for r in sub["inputs"]} <= full_train
    assert np.array_equal(load_split(tmp_path / "c", "test")["inputs"], load_split(built, "test")["inputs"])


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--num-games", "0"], "--num-games"),
    (["--num-games", "-5"], "--num-games"),
    (["--num-aug", "-1"], "--num-aug"),
    (["--subsample-size", "-3"], "--subsample-size"),
    (["--subsample-size", "0"], "--subsample-size"),
    (["--num-games", "many"], "--num-games"),
    (["--policy", "greedy"], "--policy"),
])
def test_bad_numbers_are_refused(tmp_path, args, message):
    out = tmp_path / "out"
    result = run_builder("--output-dir", out, *args)
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == [], "nothing may be written"


@pytest.mark.slow
def test_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    for out in (target, target / "inside"):
        result = run_builder("--output-dir", out, "--num-games", 5)
        assert result.returncode != 0
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert target.read_text() == "keep me" and os.listdir(tmp_path) == ["taken"]


def test_only_a_dataset_folder_is_replaced(tmp_path, capsys):
    from dataset.build_domino_dataset import main
    from dataset.common import run_cli
    data = tmp_path / "data"
    (data / "sudoku").mkdir(parents=True)
    (data / "sudoku" / "identifiers.json").write_text('["<blank>"]')
    with pytest.raises(SystemExit) as e:
        run_cli(main, ["--output-dir", str(data), "--num-games", "5"])
    assert (e.value.code, capsys.readouterr().err) == (
        2, f"error: --output-dir {data} holds files that are not a dataset (sudoku/): choose an empty or new folder\n")
    assert [p.name for p in data.rglob("*")] == ["sudoku", "identifiers.json"] and os.listdir(tmp_path) == ["data"]
    for seed in ("1", "2"):  # a domino dataset (domino.json beside the splits) is replaced
        run_cli(main, ["--output-dir", str(data / "domino"), "--num-games", "5", "--seed", seed])
        assert json.loads((data / "domino" / "domino.json").read_text())["seed"] == int(seed)
