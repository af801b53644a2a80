"""The domino inspector accepts a built dataset and names the example it finds broken."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSPECT = os.path.join(ROOT, "scripts", "inspect_domino_dataset.py")


def run(*args):
    return subprocess.run([sys.executable, INSPECT] + [str(a) for a in args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("inspect")
    paths = {}
    for policy in ("max-chain", "heaviest"):
        out = base / policy
        result = subprocess.run([sys.executable, os.path.join(ROOT, "dataset", "build_domino_dataset.py"),
                                 "--output-dir", str(out), "--num-games", "120", "--num-aug", "1",
                                 "--policy", policy, "--seed", "3"], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        paths[policy] = out
    return paths


@pytest.mark.slow
def test_clean_dataset_passes_and_prints(built):
    result = run("--data-path", built["max-chain"], "--split", "train", "--num", 2)
    assert result.returncode == 0, result.stderr
    assert "train example 0 (puzzle 0, group 0)" in result.stdout
    assert "train example 1 (puzzle 1, group 0)" in result.stdout   # the augmented copy shares the group
    assert "train example 2 " not in result.stdout
    assert "OK: all 240 examples of train" in result.stdout
    # the label of example 0 is printed as tokens; compare with the file
    y = np.load(built["max-chain"] / "train" / "all__labels.npy")[0]
    assert f"-> {y[0]}{y[1]}{y[2]}" in result.stdout


@pytest.mark.slow
def test_policy_comes_from_the_dataset(built):
    # a heaviest dataset passes as such, and fails when checked as max-chain (they differ often)
    assert run("--data-path", built["heaviest"], "--split", "test", "--num", 0).returncode == 0
    result = run("--data-path", built["heaviest"], "--split", "test", "--num", 0, "--policy", "max-chain")
    assert result.returncode == 2
    assert "test example" in result.stderr and "max-chain choice" in result.stderr


def corrupt(src, dst, fn, field="inputs", split="train"):
    """Copy dataset ``src`` to ``dst`` and let ``fn(inputs, labels)`` pick and break one example."""
    shutil.copytree(src, dst)
    x = np.load(dst / split / "all__inputs.npy")
    y = np.load(dst / split / "all__labels.npy")
    index = fn(x, y)
    np.save(dst / split / "all__inputs.npy", x)
    np.save(dst / split / "all__labels.npy", y)
    return index


def first(mask):
    return int(np.flatnonzero(mask)[0])


def other_legal_label(x, y):
    """Replace a label by a legal move that is not the policy's: a wrong but plausible label."""
    for i in range(len(x)):
        hand = [(x[i][k] - 1, x[i][k + 1] - 1) for k in range(56, 70, 2) if x[i][k]]
        left, right = x[i][70] - 1, x[i][71] - 1
        for a, b in hand:
            for where, end in ((1, left), (2, right)):
                if x[i][70] and end in (a, b) and (a + 1, b + 1, where) != tuple(y[i][:3]):
                    y[i][:3] = (a + 1, b + 1, where)
                    return i
    raise AssertionError("no example with a second legal move")


def broken_chain(x, y):
    i = first(x[:, 2] != 0)  # at least two tiles on the table
    x[i][2] = x[i][1] % 7 + 1  # the second tile's left half no longer matches the first's right half
    return i


def bad_token(x, y):
    x[7][60] = 9
    return 7


def tile_not_in_hand(x, y):
    i = first(x[:, 58] == 0)  # a one-tile hand
    a, b = x[i][56], x[i][57]
    y[i][:2] = (a, b + 1) if b < 7 else (a - 1, b)
    return i


def wrong_ends(x, y):
    i = first(x[:, 70] != 0)
    x[i][71] = x[i][71] % 7 + 1
    return i


@pytest.mark.slow
@pytest.mark.parametrize("breaker, words", [
    (other_legal_label, "is not the max-chain choice"),
    (broken_chain, "do not match"),
    (bad_token, "out of range"),
    (tile_not_in_hand, "not in the hand"),
    (wrong_ends, "end tokens"),
])
def test_corrupted_example_is_named(built, tmp_path, breaker, words):
    index = corrupt(built["max-chain"], tmp_path / "bad", breaker)
    result = run("--data-path", tmp_path / "bad", "--split", "train", "--num", 0)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: train example {index} ("), result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_missing_files(built, tmp_path):
    shutil.copytree(built["max-chain"], tmp_path / "d")
    os.remove(tmp_path / "d" / "domino.json")
    result = run("--data-path", tmp_path / "d", "--split", "test")
    assert result.returncode == 2 and "domino.json" in result.stderr and "--policy" in result.stderr
    assert run("--data-path", tmp_path / "d", "--split", "test", "--num", 0, "--policy", "max-chain").returncode == 0
    os.remove(tmp_path / "d" / "test" / "dataset.json")
    result = run("--data-path", tmp_path / "d", "--split", "test", "--policy", "max-chain")
    assert result.returncode == 2 and "dataset.json" in result.stderr and "Traceback" not in result.stderr
    # a truncated array
    path = tmp_path / "d" / "train" / "all__labels.npy"
    path.write_bytes(path.read_bytes()[:300])
    result = run("--data-path", tmp_path / "d", "--split", "train", "--policy", "max-chain")
    assert result.returncode == 2 and "all__labels.npy" in result.stderr and "Traceback" not in result.stderr
    # not a domino dataset at all
    meta = json.load(open(built["max-chain"] / "test" / "dataset.json"))
    meta["seq_len"] = 81
    os.makedirs(tmp_path / "s" / "test")
    json.dump(meta, open(tmp_path / "s" / "test" / "dataset.json", "w"))
    result = run("--data-path", tmp_path / "s", "--split", "test", "--policy", "heaviest")
    assert result.returncode == 2 and "seq_len 81" in result.stderr
