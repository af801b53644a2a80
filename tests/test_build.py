"""training/build.py: which loaders follow the data order of URM's loop (urm_train_loop)."""
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO
from training.build import create_dataloader
from training.config import parse_config


def loader(data, urm_train_loop, rank, split="train"):
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        cfg = compose("cfg_pretrain", overrides=[f"data_path={data}", "evaluators=[]", "global_batch_size=8",
                                                 f"urm_train_loop={urm_train_loop}"])
    config = parse_config(OmegaConf.to_container(cfg, resolve=True))
    test = split == "test"
    return create_dataloader(config, split, test_set_mode=test, epochs_per_iter=1, global_batch_size=8, rank=rank, world_size=2)[0]


@pytest.mark.parametrize("urm_train_loop", [False, True])
def test_only_rank_0_train_passes_follow_urm_counting_pass(sudoku4, urm_train_loop):
    """URM's loop counts the batches on rank 0 only, so only rank 0's train order moves on by a pass."""
    flags = {(split, rank): loader(sudoku4, urm_train_loop, rank, split).dataset.config.unused_pass_before_each
             for split in ("train", "test") for rank in (0, 1)}
    assert flags == {("train", 0): urm_train_loop, ("train", 1): False, ("test", 0): False, ("test", 1): False}


def test_rank_0_first_batches_are_the_second_pass_of_the_plain_order(sudoku4):
    plain = loader(sudoku4, False, 0).dataset
    list(plain)  # the pass URM's rank 0 spends counting
    want = [batch["inputs"] for _, batch, _ in plain][:3]
    got = [batch["inputs"] for _, batch, _ in loader(sudoku4, True, 0).dataset][:3]
    assert len(want) == 3 and all(torch.equal(g, w) for g, w in zip(got, want))
    first = next(iter(loader(sudoku4, False, 0).dataset))[1]["inputs"]
    assert not torch.equal(first, got[0])


def tiny_trm_config(*overrides):
    from conftest import TINY_TRM
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        cfg = compose("cfg_pretrain", overrides=["arch=trm", *TINY_TRM, "evaluators=[]", "global_batch_size=4", "epochs=10", "eval_interval=10",
                                                 "compile=false", *overrides])
    return parse_config(OmegaConf.to_container(cfg, resolve=True))


def test_segment_loss_decay_reaches_the_loss_head_and_bad_values_are_one_line():
    from dataset.common import PuzzleDatasetMetadata
    from training.build import create_model
    from utils.config import ConfigError
    meta = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=6, seq_len=16, num_puzzle_identifiers=3,
                                 total_groups=8, mean_puzzle_examples=1, sets=["all"])
    assert create_model(tiny_trm_config(), meta, world_size=1, device="cpu").segment_loss_decay is None
    assert create_model(tiny_trm_config("segment_loss_decay=0.7"), meta, world_size=1, device="cpu").segment_loss_decay == 0.7
    with pytest.raises(ConfigError, match=r"^config: segment_loss_decay must be a positive number .*got -0.5$"):
        tiny_trm_config("segment_loss_decay=-0.5")
