"""utils/outputs.py: saved evaluation outputs read over ranks and exported as .npy for the visualizer."""
import numpy as np
import pytest
import torch

from utils.outputs import load_outputs, main


def test_ranks_concatenate_padding_drops_and_npy_export(tmp_path):
    labels = torch.tensor([[1, 2], [3, -100], [-100, -100]])
    logits = torch.zeros(3, 2, 4)
    logits[0, :, 3] = 1
    torch.save({"labels": labels[:2], "logits": logits[:2]}, tmp_path / "step_5_all_preds.0")
    torch.save({"labels": labels[2:], "logits": logits[2:]}, tmp_path / "step_5_all_preds.1")
    torch.save({"labels": labels}, tmp_path / "step_2_all_preds.0")  # an older step: not picked by default
    out = load_outputs(str(tmp_path))
    np.testing.assert_array_equal(out["labels"], [[1, 2], [3, -100]])  # rank 1's padding row dropped

    main([str(tmp_path / "step_5_all_preds.0")])
    preds = np.load(tmp_path / "step_5_all_preds.0.preds.npy")
    np.testing.assert_array_equal(preds, [[3, 3], [0, 0]])  # argmax of the logits, which are not exported
    assert not (tmp_path / "step_5_all_preds.0.logits.npy").exists()
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "unrelated.txt")])
    assert e.value.code == 2


def test_preds_of_two_ranks_join_with_the_split_in_its_order(sudoku4):
    from puzzle_dataset import test_pass_rows
    from utils.outputs import join_ranks
    split = {f: np.load(sudoku4 / "test" / f"all__{f}.npy") for f in ("inputs", "labels")}
    # 16 test examples in global batches of 6 over 2 processes: rank 0 evaluates 0-2, 6-8, 12-14, rank 1 3-5, 9-11, 15.
    examples, positions = test_pass_rows([str(sudoku4)], 6, 2)
    np.testing.assert_array_equal(examples["inputs"], split["inputs"])
    np.testing.assert_array_equal(positions[0], [0, 1, 2, 6, 7, 8, 12, 13, 14])
    np.testing.assert_array_equal(positions[1], [3, 4, 5, 9, 10, 11, 15])
    preds = split["labels"] + 100 * np.arange(16)[:, None]  # one recognisable row per example
    parts = [{"preds": preds[p]} for p in positions]
    out = join_ranks(parts, positions, examples)
    np.testing.assert_array_equal(out["preds"], preds)
    np.testing.assert_array_equal(out["inputs"], split["inputs"])
    assert set(out) == {"preds", "inputs", "labels", "puzzle_identifiers"}
    # A file that kept its padding rows (rank 1: 9 rows where 7 are examples) is refused, named.
    padded = [parts[0], {"preds": np.concatenate([parts[1]["preds"], preds[:2]])}]
    with pytest.raises(ValueError, match="step_5_all_preds.1: 9 rows of 'preds', but rank 1 of this pass evaluated 7 of its 16"):
        join_ranks(padded, positions, examples, names=["step_5_all_preds.0", "step_5_all_preds.1"])
    # max_examples: the first 10 examples, split the same way.
    _, short = test_pass_rows([str(sudoku4)], 6, 2, max_examples=10)
    np.testing.assert_array_equal(np.sort(np.concatenate(short)), np.arange(10))
