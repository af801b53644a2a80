"""Shared configuration rules (utils/config.py)."""
import pytest

from utils.config import ConfigError, check_batch_divisible, normalize_data_paths, user_error_message


def test_data_path_spellings_become_one_list():
    assert normalize_data_paths("a", None) == ["a"]
    assert normalize_data_paths(None, "a") == ["a"]
    assert normalize_data_paths("a", ["a"]) == ["a"]
    assert normalize_data_paths(None, ["a", "b"]) == ["a", "b"]
    assert normalize_data_paths(None, []) == []
    with pytest.raises(ConfigError, match=r"dataset_path=a and dataset_paths=\['b'\] disagree"):
        normalize_data_paths("a", ["b"], names=("dataset_path", "dataset_paths"))


def test_batch_must_split_evenly_over_processes():
    check_batch_divisible(8, 4)
    with pytest.raises(ConfigError, match=r"global_batch_size \(8\) is not divisible by the number of processes \(3\)"):
        check_batch_divisible(8, 3)


def test_worker_tracebacks_shrink_to_their_last_line():
    wrapped = RuntimeError("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                           "  File ...\ndataset.common.DatasetError: data/x/train/all__inputs.npy: token 12 out of range")
    assert user_error_message(wrapped) == "data/x/train/all__inputs.npy: token 12 out of range"
