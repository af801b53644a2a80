"""Crash-safe writes and train-state discovery (utils/checkpoint.py)."""
import os
from dataclasses import dataclass
from typing import Dict

import pytest
import torch

from utils.checkpoint import (atomic_torch_save, atomic_write_text, carry_from_dict, carry_to_dict, list_train_states, resolve_resume,
                              step_of, train_state_paths)


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


@dataclass
class ThreeLatents:
    z_H: torch.Tensor
    z_L: torch.Tensor
    z_M: torch.Tensor


@dataclass
class Carry:
    inner_carry: ThreeLatents
    steps: torch.Tensor
    halted: torch.Tensor
    current_data: Dict[str, torch.Tensor]


class FreshCarryModel(torch.nn.Module):
    def initial_carry(self, batch):
        return Carry(ThreeLatents(*(torch.zeros(2, 3) for _ in range(3))), torch.zeros(2, dtype=torch.int32),
                     torch.ones(2, dtype=torch.bool), {k: torch.zeros_like(v) for k, v in batch.items()})


def test_carry_round_trip_keeps_every_latent_in_the_v1_layout():
    carry = Carry(ThreeLatents(torch.full((2, 3), 1.0), torch.full((2, 3), 2.0), torch.full((2, 3), 3.0)),
                  torch.tensor([1, 2], dtype=torch.int32), torch.tensor([False, True]), {"inputs": torch.arange(4).view(2, 2)})
    saved = carry_to_dict(carry)
    assert sorted(saved) == ["current_data", "halted", "steps", "z_H", "z_L", "z_M"]  # latents at the top level, as format v1
    back = carry_from_dict(FreshCarryModel(), saved, torch.device("cpu"))
    for name in ("z_H", "z_L", "z_M"):
        assert torch.equal(getattr(back.inner_carry, name), getattr(carry.inner_carry, name))
    assert torch.equal(back.steps, carry.steps) and torch.equal(back.halted, carry.halted)
    assert torch.equal(back.current_data["inputs"], carry.current_data["inputs"])
    assert carry_to_dict(None) is None and carry_from_dict(FreshCarryModel(), None, "cpu") is None


def test_step_of_reads_only_weights_file_names():
    assert step_of("ck/run/step_12") == 12
    assert step_of("ck/run/step_12.train_state.pt") is None and step_of("ck/run/all_config.yaml") is None

