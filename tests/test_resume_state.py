"""Train-state discovery, the ACT carry's layout, truncated states and clean-up (training/resume_state.py)."""
import os
from dataclasses import dataclass
from typing import Dict

import pytest
import torch

from training.resume_state import (TRAIN_STATE_FORMAT, carry_from_dict, carry_to_dict, clean_checkpoint_folder, list_train_states,
                                   load_train_state, resolve_resume, restore_rng_states, train_state_paths)
from utils.safe_io import CheckpointError, atomic_write_text


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


def _state(folder, step, batches_in_iter, world_size=1):
    shared, _ = train_state_paths(str(folder), step, 0)
    torch.save({"format": TRAIN_STATE_FORMAT, "world_size": world_size, "step": step, "batches_in_iter": batches_in_iter}, shared)
    for r in range(world_size):
        torch.save({}, train_state_paths(str(folder), step, r)[1])


def test_truncated_train_state_names_the_previous_complete_one(tmp_path):
    _state(tmp_path, 12, 0)
    _state(tmp_path, 17, 5)
    shared = tmp_path / "step_17.train_state.pt"
    shared.write_bytes(shared.read_bytes()[:300])
    with pytest.raises(CheckpointError) as e:
        load_train_state(str(tmp_path), 17, 0, map_location="cpu")
    assert str(e.value) == f"{shared}: this train state is truncated; the previous complete one is step_12: resume={tmp_path}/step_12"


def test_clean_up_after_kills_keeps_pass_end_states_and_the_newest(tmp_path):
    _state(tmp_path, 5, 5)            # mid-pass state of a killed run: stale
    _state(tmp_path, 12, 0)           # end of a pass (evaluation): kept, as an uninterrupted run keeps it
    _state(tmp_path, 15, 3)           # mid-pass, older than the newest: stale
    _state(tmp_path, 20, 8)           # newest complete: kept
    (tmp_path / "step_18.train_state.rank0.pt").write_bytes(b"")      # rank file without its shared file
    (tmp_path / ".step_21.train_state.pt.k3x9a0b1.tmp").write_bytes(b"x")  # a kill while saving
    (tmp_path / ".all_config.yaml.abcdefgh.tmp").write_bytes(b"x")
    (tmp_path / "notes.tmp").write_bytes(b"mine")                    # not ours: untouched
    (tmp_path / "step_12").write_bytes(b"w")
    removed = clean_checkpoint_folder(str(tmp_path))
    assert removed == sorted([".all_config.yaml.abcdefgh.tmp", ".step_21.train_state.pt.k3x9a0b1.tmp", "step_15.train_state.pt",
                              "step_15.train_state.rank0.pt", "step_18.train_state.rank0.pt", "step_5.train_state.pt",
                              "step_5.train_state.rank0.pt"])
    assert sorted(os.listdir(tmp_path)) == ["notes.tmp", "step_12", "step_12.train_state.pt", "step_12.train_state.rank0.pt",
                                            "step_20.train_state.pt", "step_20.train_state.rank0.pt"]

def test_rng_states_restore_whatever_the_map_location(tmp_path):
    """On a GPU the resume state is loaded with map_location=<the GPU>; the RNG setters take CPU
    byte tensors only. A non-CPU map_location (meta here, on any machine) must still restore them."""
    torch.manual_seed(123)
    saved = torch.get_rng_state()
    expected = torch.rand(4)
    shared, own = train_state_paths(str(tmp_path), 7, 0)
    torch.save({"format": TRAIN_STATE_FORMAT, "world_size": 1, "step": 7, "model": {"w": torch.ones(3)}}, shared)
    torch.save({"rng_torch": saved, "rng_cuda": None, "carry": None}, own)
    shared_state, own_state = load_train_state(str(tmp_path), 7, 0, map_location="meta")
    assert shared_state["model"]["w"].device.type == "meta"  # map_location applies to the shared part
    torch.manual_seed(0)
    restore_rng_states(own_state, torch.device("meta"))
    assert torch.equal(torch.rand(4), expected)
