"""PuzzleDataset: test-mode coverage over ranks, train-mode sampling as the original, resume, merging, errors.

Datasets are written to disk with real files. Every example's input row encodes its own index
(``inputs[i] = [i % 250 + 1, i // 250 + 1, ...]``) so a batch can be traced back to the examples in it.
"""
import json
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dataset.common import DatasetError, PuzzleDatasetMetadata, save_metadata, save_set
from puzzle_dataset import IGNORE_LABEL_ID, PuzzleDataset, PuzzleDatasetConfig, iter_train_batches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "..", "shared", "reference", "datasets")

SEQ_LEN, VOCAB = 4, 256


def write_dataset(path, puzzle_sizes, group_sizes, dtype=np.int32, split="train", identifier_offset=1,
                  vocab=VOCAB, **meta_overrides):
    """A dataset whose puzzles hold ``puzzle_sizes`` examples, grouped by ``group_sizes`` (puzzles per group)."""
    assert sum(group_sizes) == len(puzzle_sizes)
    n = sum(puzzle_sizes)
    idx = np.arange(n)
    inputs = np.stack([idx % 250 + 1, idx // 250 + 1, np.full(n, 3), np.full(n, 4)], axis=1).astype(dtype)
    labels = inputs.copy()
    labels[:, 3] = 0  # ignore_label_id -> -100
    arrays = {
        "inputs": inputs, "labels": labels,
        "puzzle_identifiers": (np.arange(len(puzzle_sizes)) + identifier_offset).astype(dtype),
        "puzzle_indices": np.concatenate([[0], np.cumsum(puzzle_sizes)]).astype(dtype),
        "group_indices": np.concatenate([[0], np.cumsum(group_sizes)]).astype(dtype),
    }
    save_set(os.path.join(path, split), "all", arrays)
    meta = dict(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab, seq_len=SEQ_LEN,
                num_puzzle_identifiers=len(puzzle_sizes) + identifier_offset, total_groups=len(group_sizes),
                mean_puzzle_examples=n / len(puzzle_sizes), sets=["all"])
    meta.update(meta_overrides)
    save_metadata(os.path.join(path, split), PuzzleDatasetMetadata(**meta))
    return arrays


def example_ids(batch):
    """Index of each real (non-padding) example in a batch."""
    x = batch["inputs"].numpy().astype(np.int64)
    real = x[:, 0] != 0
    return ((x[:, 0] - 1) + 250 * (x[:, 1] - 1))[real]


def config(paths, **kw):
    base = dict(seed=7, dataset_paths=paths, global_batch_size=6, test_set_mode=False, epochs_per_iter=1,
                rank=0, num_replicas=1)
    base.update(kw)
    return PuzzleDatasetConfig(**base)


# A mixed dataset: 9 puzzles of 1..4 examples in 5 groups of 1..3 puzzles (22 examples).
PUZZLES = [3, 1, 4, 2, 2, 1, 3, 4, 2]
GROUPS = [2, 1, 3, 1, 2]


def reference_train_pass(arrays, seed, gbs, epochs):
    """The original HRM sampler written out plainly (with the seeded generator for example order)."""
    rng = np.random.Generator(np.random.Philox(seed=seed))
    gi, pi = arrays["group_indices"].astype(np.int64), arrays["puzzle_indices"].astype(np.int64)
    order = np.concatenate([rng.permutation(gi.size - 1) for _ in range(epochs)])
    start, batches = 0, []
    while start < order.size:
        ex, pz, size = [], [], 0
        while start < order.size and size < gbs:
            g = order[start]
            start += 1
            p = rng.integers(gi[g], gi[g + 1])
            p_start, p_size = pi[p], int(pi[p + 1] - pi[p])
            take = min(p_size, gbs - size)
            ex.append(p_start + rng.choice(p_size, take, replace=False))
            pz.append(np.full(take, p))
            size += take
        if size < gbs:
            break
        batches.append((np.concatenate(ex), np.concatenate(pz)))
    return batches


# ----------------------------------------------------------------------------------------------
# Test mode

@pytest.mark.parametrize("num_replicas", [1, 2, 3])
def test_test_mode_yields_every_example_once_across_ranks(tmp_path, num_replicas):
    arrays = write_dataset(str(tmp_path), PUZZLES, GROUPS, split="test")
    seen, sizes = [], []
    for rank in range(num_replicas):
        ds = PuzzleDataset(config([str(tmp_path)], test_set_mode=True, rank=rank, num_replicas=num_replicas), "test")
        for set_name, batch, global_size in ds:
            assert set_name == "all"
            assert batch["inputs"].shape == (6 // num_replicas, SEQ_LEN) and batch["inputs"].dtype == torch.int32
            ids = example_ids(batch)
            seen.extend(ids.tolist())
            sizes.append(global_size)
            # Identifiers belong to each example's puzzle; padding rows are PAD / -100 / blank.
            puzzle = np.searchsorted(arrays["puzzle_indices"], ids, side="right") - 1
            np.testing.assert_array_equal(batch["puzzle_identifiers"][:ids.size].numpy(), puzzle + 1)
            assert torch.all(batch["labels"][:ids.size, 3] == IGNORE_LABEL_ID)
            assert torch.all(batch["inputs"][ids.size:] == 0) and torch.all(batch["labels"][ids.size:] == IGNORE_LABEL_ID)
            assert torch.all(batch["puzzle_identifiers"][ids.size:] == 0)
    assert sorted(seen) == list(range(22))
    assert sizes[: 4] == [6, 6, 6, 4]  # the last window's real size


@pytest.mark.parametrize("num_replicas", [1, 2, 3])
def test_max_examples_is_the_first_n_examples_of_the_merged_split(tmp_path, num_replicas):
    # Two folders of 22 examples each: 25 examples are all of the first and 3 of the second.
    for name in ("a", "b"):
        write_dataset(str(tmp_path / name), PUZZLES, GROUPS, split="test")
    seen = []
    for rank in range(num_replicas):
        ds = PuzzleDataset(config([str(tmp_path / "a"), str(tmp_path / "b")], test_set_mode=True, rank=rank,
                                  num_replicas=num_replicas, max_examples=25), "test")
        assert ds.num_examples == 25
        seen.extend(example_ids(batch).tolist() for _, batch, _ in ds)
    flat = sorted(i for ids in seen for i in ids)
    assert flat == sorted(list(range(22)) + [0, 1, 2])
    with pytest.raises(ValueError, match="max_examples"):
        config([str(tmp_path / "a")], test_set_mode=False, max_examples=5)


# ----------------------------------------------------------------------------------------------
# Train mode

def test_train_mode_matches_the_original_sampler(tmp_path):
    arrays = write_dataset(str(tmp_path), PUZZLES, GROUPS)
    ds = PuzzleDataset(config([str(tmp_path)], epochs_per_iter=4))
    for pass_number in (1, 2):  # the pass counter advances the seed: seed + 1, then seed + 2
        got = [example_ids(b) for _, b, n in ds]
        want = reference_train_pass(arrays, 7 + pass_number, 6, 4)
        assert len(got) == len(want) > 0
        for g, (ex, _) in zip(got, want):
            np.testing.assert_array_equal(g, ex)


def test_train_batches_are_full_and_picks_stay_inside_one_puzzle(tmp_path):
    arrays = write_dataset(str(tmp_path), PUZZLES, GROUPS)
    gi, pi = arrays["group_indices"], arrays["puzzle_indices"]
    rng = np.random.Generator(np.random.Philox(seed=3))
    batches = list(iter_train_batches(rng, gi.astype(np.int64), pi.astype(np.int64), 6, 5))
    consumed = 0
    for ex, pz in batches:
        assert ex.size == pz.size == 6  # full, never padded
        # every example lies in the puzzle it is attributed to ...
        np.testing.assert_array_equal(np.searchsorted(pi, ex, side="right") - 1, pz)
        # ... and one pick never repeats an example (runs of one puzzle are one pick, or two at
        # an epoch boundary; within a pick examples are drawn without replacement)
        for p in np.unique(pz):
            run = ex[pz == p]
            assert len(set(run.tolist())) == run.size or run.size > pi[p + 1] - pi[p]
        consumed += ex.size
    # 5 epochs of 5 groups each give between 5*5*1 and 5*(3+1+4+2+4)... examples; the partial
    # tail is dropped: fewer than a batch may be lost, never more.
    ds = PuzzleDataset(config([str(tmp_path)], epochs_per_iter=5, seed=2))
    assert all(b["inputs"].shape[0] == 6 and torch.all(b["inputs"][:, 0] > 0) for _, b, _ in ds)


@pytest.mark.parametrize("puzzles, groups, epochs, want", [
    ([1] * 5, [1] * 5, 1, 1),  # 5 examples per pass, batches of 4: one batch, 1 example dropped
    ([1] * 5, [1] * 5, 3, 3),  # 15 examples: three batches, 3 dropped
    ([3, 3, 3], [1, 1, 1], 1, 1),  # 3 + 1 (truncated pick) fill a batch; the last 3 examples are dropped
])
def test_train_drops_the_incomplete_last_batch(tmp_path, puzzles, groups, epochs, want):
    write_dataset(str(tmp_path), puzzles, groups)
    batches = list(PuzzleDataset(config([str(tmp_path)], global_batch_size=4, epochs_per_iter=epochs)))
    assert len(batches) == want
    assert all(example_ids(b).size == 4 and n == 4 for _, b, n in batches)


def test_train_is_deterministic_and_seed_dependent(tmp_path):
    write_dataset(str(tmp_path), PUZZLES, GROUPS)
    runs = [[example_ids(b) for _, b, _ in PuzzleDataset(config([str(tmp_path)], epochs_per_iter=3, seed=s))]
            for s in (11, 11, 12)]
    assert len(runs[0]) == len(runs[1]) and all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], runs[2]))


def test_train_rank_slices_partition_the_global_batch(tmp_path):
    write_dataset(str(tmp_path), PUZZLES, GROUPS)
    full = [example_ids(b) for _, b, _ in PuzzleDataset(config([str(tmp_path)], epochs_per_iter=3))]
    parts = [[example_ids(b) for _, b, n in PuzzleDataset(config([str(tmp_path)], epochs_per_iter=3, rank=r,
                                                                   num_replicas=3))] for r in range(3)]
    for i, whole in enumerate(full):
        np.testing.assert_array_equal(np.concatenate([p[i] for p in parts]), whole)


def test_single_example_fast_path_equals_general_path():
    # Groups of several one-example puzzles (like augmented Sudoku): the vectorised path must draw
    # exactly what the per-group loop draws.
    group_indices = np.concatenate([[0], np.cumsum(np.random.default_rng(0).integers(1, 9, size=300))])
    puzzle_indices = np.arange(group_indices[-1] + 1)
    fast = iter_train_batches(np.random.Generator(np.random.Philox(seed=5)), group_indices, puzzle_indices, 64, 7, True)
    slow = iter_train_batches(np.random.Generator(np.random.Philox(seed=5)), group_indices, puzzle_indices, 64, 7, False)
    fast, slow = list(fast), list(slow)
    assert len(fast) == len(slow) == (300 * 7) // 64
    for (a, pa), (b, pb) in zip(fast, slow):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(pa, pb)


def test_resume_with_start_iter_and_skip_batches(tmp_path):
    write_dataset(str(tmp_path), PUZZLES, GROUPS)
    uninterrupted = PuzzleDataset(config([str(tmp_path)], epochs_per_iter=4))
    first = [example_ids(b) for _, b, _ in uninterrupted]
    second = [example_ids(b) for _, b, _ in uninterrupted]
    assert uninterrupted.pass_counter == 2 and uninterrupted.num_streams == 1
    # Interrupted after 3 batches of the second pass: start_iter=1 (one pass done), skip 3.
    resumed = PuzzleDataset(config([str(tmp_path)], epochs_per_iter=4, start_iter=1, skip_batches=3))
    got = [example_ids(b) for _, b, _ in resumed]
    assert len(got) == len(second) - 3
    assert all(np.array_equal(a, b) for a, b in zip(got, second[3:]))
    # The pass after the resumed one is the third pass of the uninterrupted run, unskipped.
    third = [example_ids(b) for _, b, _ in uninterrupted]
    again = [example_ids(b) for _, b, _ in resumed]
    assert len(again) == len(third) and all(np.array_equal(a, b) for a, b in zip(again, third))
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))


def test_resume_of_merged_folders(tmp_path):
    # Two folders = two streams per pass (each advances the original's counter); start_iter counts passes.
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    write_dataset(a, PUZZLES, GROUPS)
    write_dataset(b, [2, 1, 3], [1, 2])
    uninterrupted = PuzzleDataset(config([a, b], epochs_per_iter=3))
    list(uninterrupted)
    second = [example_ids(batch) for _, batch, _ in uninterrupted]
    assert uninterrupted.pass_counter == 4 and uninterrupted.num_streams == 2
    resumed = PuzzleDataset(config([a, b], epochs_per_iter=3, start_iter=1, skip_batches=len(second) - 2))
    got = [example_ids(batch) for _, batch, _ in resumed]
    assert len(got) == 2 and all(np.array_equal(x, y) for x, y in zip(got, second[-2:]))


def test_dataloader_worker_keeps_the_pass_counter(tmp_path):
    write_dataset(str(tmp_path), PUZZLES, GROUPS)
    direct = PuzzleDataset(config([str(tmp_path)], epochs_per_iter=2))
    want = [[example_ids(b) for _, b, _ in direct] for _ in range(2)]
    loader = DataLoader(PuzzleDataset(config([str(tmp_path)], epochs_per_iter=2)), batch_size=None,
                        num_workers=1, persistent_workers=True)
    got = [[example_ids(b) for _, b, _ in loader] for _ in range(2)]
    for g, w in zip(got, want):
        assert len(g) == len(w) and all(np.array_equal(a, b) for a, b in zip(g, w))


def test_unused_pass_before_each_is_the_order_after_a_counting_pass(tmp_path):
    """URM's loop (rank 0) iterates its loader once per pass to count the batches, then trains on
    the next iteration: the option yields those training iterations' batches, counting nothing."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    write_dataset(a, PUZZLES, GROUPS)
    write_dataset(b, [2, 1, 3], [1, 2])  # two streams per pass
    counted = DataLoader(PuzzleDataset(config([a, b], epochs_per_iter=2)), batch_size=None, num_workers=1, persistent_workers=True)
    want = []
    for _ in range(3):
        assert sum(1 for _ in counted) > 2  # the counting pass
        want.append([example_ids(batch) for _, batch, _ in counted])
    option = PuzzleDataset(config([a, b], epochs_per_iter=2, unused_pass_before_each=True))
    got = [[example_ids(batch) for _, batch, _ in option] for _ in range(3)]
    for g, w in zip(got, want):
        assert len(g) == len(w) and all(np.array_equal(x, y) for x, y in zip(g, w))
    assert option.pass_counter == 12
    plain = [example_ids(batch) for _, batch, _ in PuzzleDataset(config([a, b], epochs_per_iter=2))]
    assert not all(np.array_equal(x, y) for x, y in zip(plain, got[0])), "without the option the first pass differs"
    # Resumed after 2 batches of the second pass, the option continues that order.
    resumed = PuzzleDataset(config([a, b], epochs_per_iter=2, unused_pass_before_each=True, start_iter=1, skip_batches=2))
    rest = [[example_ids(batch) for _, batch, _ in resumed] for _ in range(2)]
    assert all(np.array_equal(x, y) for x, y in zip(rest[0], want[1][2:])) and len(rest[0]) == len(want[1]) - 2
    assert len(rest[1]) == len(want[2]) and all(np.array_equal(x, y) for x, y in zip(rest[1], want[2]))


# ----------------------------------------------------------------------------------------------
# Formats, merging, configuration

@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.int64])
def test_any_integer_dtype_loads(tmp_path, dtype):
    write_dataset(str(tmp_path), PUZZLES, GROUPS, dtype=dtype, vocab=251)
    ds = PuzzleDataset(config([str(tmp_path)], test_set_mode=True, global_batch_size=22))
    (_, batch, n), = list(ds)
    assert n == 22 and all(v.dtype == torch.int32 for v in batch.values())
    np.testing.assert_array_equal(np.sort(example_ids(batch)), np.arange(22))


def test_several_paths_merge(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    write_dataset(a, PUZZLES, GROUPS)
    write_dataset(b, [2, 2], [2], identifier_offset=10)
    ds = PuzzleDataset(config([a, b], test_set_mode=True, global_batch_size=30))
    meta = ds.metadata
    assert meta.total_groups == 6 and meta.total_puzzles == 11
    assert meta.num_puzzle_identifiers == 10 + 12
    assert meta.mean_puzzle_examples == pytest.approx(26 / 11)
    out = list(ds)
    assert [s for s, _, _ in out] == ["all", "all"]  # plain set names, one stream per folder
    assert [n for _, _, n in out] == [22, 4]
    np.testing.assert_array_equal(out[1][1]["puzzle_identifiers"][:4].numpy(), [10, 10, 11, 11])


def test_merging_mismatched_datasets_is_a_clear_error(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    write_dataset(a, PUZZLES, GROUPS)
    write_dataset(b, [1], [1], vocab=12)
    with pytest.raises(DatasetError, match=r"b/train/dataset.json: vocab_size=12 differs from vocab_size=256"):
        PuzzleDataset(config([a, b]))


def test_config_spellings_and_checks(tmp_path):
    c = PuzzleDatasetConfig(seed=0, dataset_path="x", global_batch_size=4, test_set_mode=True, epochs_per_iter=1,
                            rank=0, num_replicas=2)
    assert c.dataset_paths == ["x"] and c.dataset_path == "x"
    with pytest.raises(ValueError, match="must be divisible by the number of ranks"):
        config(["x"], global_batch_size=10, num_replicas=3)
    with pytest.raises(ValueError, match="rank 2 is not in"):
        config(["x"], rank=2, num_replicas=2)


# ----------------------------------------------------------------------------------------------
# Bad datasets: one clear error naming the file

def test_missing_dataset_json(tmp_path):
    with pytest.raises(DatasetError, match=r"train/dataset.json: missing"):
        PuzzleDataset(config([str(tmp_path)]))


def test_missing_array(tmp_path):
    write_dataset(str(tmp_path), PUZZLES, GROUPS)
    os.remove(tmp_path / "train" / "all__labels.npy")
    with pytest.raises(DatasetError, match=r"all__labels.npy: missing"):
        PuzzleDataset(config([str(tmp_path)]))


def test_truncated_array_is_named(tmp_path):
    write_dataset(str(tmp_path), PUZZLES, GROUPS)
    path = tmp_path / "train" / "all__inputs.npy"
    path.write_bytes(path.read_bytes()[:-10])  # as a copy or a build cut short leaves it
    with pytest.raises(DatasetError, match=r"all__inputs.npy: truncated \(\d+ bytes, its header announces \d+\)"):
        PuzzleDataset(config([str(tmp_path)]))


def test_lengths_that_disagree_with_the_index_files(tmp_path):
    write_dataset(str(tmp_path), PUZZLES, GROUPS)
    np.save(tmp_path / "train" / "all__puzzle_indices.npy", np.array([0, 3, 4, 8, 10, 12, 13, 16, 20, 21]))
    ds = PuzzleDataset(config([str(tmp_path)]))
    with pytest.raises(DatasetError, match=r"all__puzzle_indices.npy: must rise from 0 to the number of examples \(22\)"):
        ds.validate()
    np.save(tmp_path / "train" / "all__puzzle_identifiers.npy", np.zeros(4, np.int32))
    with pytest.raises(DatasetError, match=r"all__puzzle_indices.npy: 10 entries, expected 5"):
        PuzzleDataset(config([str(tmp_path)]))


def test_tokens_out_of_vocabulary(tmp_path):
    write_dataset(str(tmp_path), PUZZLES, GROUPS, vocab=20)  # inputs reach 22
    ds = PuzzleDataset(config([str(tmp_path)]))
    with pytest.raises(DatasetError, match=r"all__inputs.npy: tokens must lie in \[0, vocab_size=20\); got 1 .. 22"):
        next(iter(ds))
    labels = np.load(tmp_path / "train" / "all__labels.npy")
    labels[5, 2] = 30
    write_dataset(str(tmp_path), PUZZLES, GROUPS, vocab=23)
    np.save(tmp_path / "train" / "all__labels.npy", labels)
    with pytest.raises(DatasetError, match=r"all__labels.npy: labels must lie in \[0, vocab_size=23\)"):
        PuzzleDataset(config([str(tmp_path)])).validate()


def test_total_groups_must_match_the_index_files(tmp_path):
    write_dataset(str(tmp_path), PUZZLES, GROUPS, total_groups=4)
    with pytest.raises(DatasetError, match="total_groups=4 but the group_indices files hold 5 groups"):
        PuzzleDataset(config([str(tmp_path)]))


# ----------------------------------------------------------------------------------------------
# Files written by the original builders

@pytest.mark.skipif(not os.path.isdir(REFERENCE), reason="../shared/reference/datasets not present (fixtures of the original code)")
@pytest.mark.parametrize("name", ["sudoku", "maze"])
def test_reference_uint8_datasets_load(name):
    path = os.path.join(REFERENCE, name)
    inputs = np.load(os.path.join(path, "test", "all__inputs.npy"))
    labels = np.load(os.path.join(path, "test", "all__labels.npy"))
    assert inputs.dtype == np.uint8
    ds = PuzzleDataset(config([path], test_set_mode=True, global_batch_size=len(inputs)), "test")
    (_, batch, n), = list(ds)
    assert n == len(inputs)
    np.testing.assert_array_equal(batch["inputs"].numpy(), inputs.astype(np.int32))
    want = np.where(labels == 0, IGNORE_LABEL_ID, labels.astype(np.int32))
    np.testing.assert_array_equal(batch["labels"].numpy(), want)
    train = PuzzleDataset(config([path], global_batch_size=8, epochs_per_iter=2))
    assert train.metadata.total_groups == json.load(open(os.path.join(path, "train", "dataset.json")))["total_groups"]
    assert len(list(train)) == (2 * train.metadata.total_groups) // 8
