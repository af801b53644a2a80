"""Crash-safe writes and train-state discovery (utils/checkpoint.py)."""
import os

import pytest
import torch

from utils.checkpoint import atomic_torch_save, atomic_write_text, list_train_states, resolve_resume, train_state_paths


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "step_1"
    atomic_torch_save({"w": torch.ones(2)}, str(path))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_torch_save({"w": Unpicklable()}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["step_1"]


def test_text_write_and_state_discovery(tmp_path):
    atomic_write_text(str(tmp_path / "all_config.yaml"), "a: 1\n")
    assert (tmp_path / "all_config.yaml").read_text() == "a: 1\n"
    for step in (5, 12):
        shared, rank0 = train_state_paths(str(tmp_path), step, 0)
        torch.save({}, shared)
        torch.save({}, rank0)
    (tmp_path / "step_7.train_state.rank0.pt").write_bytes(b"")  # a rank file without its shared file is not a state
    assert list_train_states(str(tmp_path)) == [5, 12]
    assert resolve_resume(str(tmp_path)) == (str(tmp_path), 12)
    assert resolve_resume(str(tmp_path / "step_5")) == (str(tmp_path), 5)
    with pytest.raises(ValueError, match="step_7"):
        resolve_resume(str(tmp_path / "step_7"))
