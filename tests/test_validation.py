"""Checks before any work (training/validation.py): impossible values, typos and test splits that do
not fit the model are one line naming the option or file."""
import json
import shutil

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO
from training.config import ConfigError, parse_config
from puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
from training import validation


def compose_raw(overrides):
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        return OmegaConf.to_container(compose("cfg_pretrain", overrides=overrides), resolve=True)


@pytest.mark.parametrize("overrides, message", [
    (["ema_rate=5"], "ema_rate must lie in (0, 1), got 5"),
    (["lr=-1"], "lr must be >= 0, got -1"),
    (["lr_warmup_steps=-3"], "lr_warmup_steps must be >= 0, got -3"),
    (["beta1=2"], "beta1 must lie in [0, 1), got 2"),
    (["arch.hidden_size=0"], "arch.hidden_size must be > 0, got 0"),
    (["dist_timeout_s=0"], "dist_timeout_s must be positive"),
    (["+epocs=5"], "config: unknown key epocs (did you mean epochs?); valid keys: arch, "),
    (["eval_save_outputs=[preds,logitz]"], "eval_save_outputs: unknown output logitz (did you mean logits?); valid names: inputs, labels"),
])
def test_bad_values_and_typos_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        parse_config(compose_raw(overrides))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_checkpoint_path_naming_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match=f"checkpoint_path={tmp_path / 'f'} is a file; give a folder"):
        parse_config(compose_raw([f"checkpoint_path={tmp_path / 'f'}"]))


def test_evaluate_save_outputs_typo(capsys):
    import evaluate
    with pytest.raises(SystemExit) as e:
        evaluate.main(["checkpoint=/nowhere/step_1", "save_outputs=[logitz]"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: save_outputs: unknown output logitz (did you mean logits?); valid names: inputs,") and "\n" not in err


def _dataset(path, split):
    return PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=[str(path)], global_batch_size=8, test_set_mode=split == "test",
                                             epochs_per_iter=1, rank=0, num_replicas=1), split=split)


def test_test_token_outside_the_models_vocabulary_names_the_file(sudoku4, tmp_path):
    data = tmp_path / "bigger-test-vocab"
    shutil.copytree(sudoku4, data)
    meta = json.loads((data / "test" / "dataset.json").read_text())
    (data / "test" / "dataset.json").write_text(json.dumps({**meta, "vocab_size": meta["vocab_size"] + 4}))
    train, test = _dataset(data, "train"), _dataset(data, "test")
    validation.check_splits(train.metadata, test.metadata, test, [str(data)])  # larger declared vocabulary, tokens still fit

    inputs = np.load(data / "test" / "all__inputs.npy")
    inputs[2, 3] = meta["vocab_size"] + 1
    np.save(data / "test" / "all__inputs.npy", inputs)
    with pytest.raises(ValueError) as e:
        validation.check_splits(train.metadata, _dataset(data, "test").metadata, _dataset(data, "test"), [str(data)])
    assert str(e.value) == (f"{data}/test/all__inputs.npy: value {meta['vocab_size'] + 1} is outside the model's "
                            f"vocab_size={meta['vocab_size']} (from the train split); the test split must use the train split's vocabulary")


def test_empty_test_split():
    with pytest.raises(ValueError, match="data/x/test: the test split is empty but eval_interval=5 asks for evaluations"):
        validation.check_test_split_not_empty(0, ["data/x"], eval_interval=5)
    assert validation.check_test_split_not_empty(0, ["data/x"], eval_interval=None).startswith("warning: data/x/test: the test split is empty")
    assert validation.check_test_split_not_empty(3, ["data/x"], eval_interval=5) is None
