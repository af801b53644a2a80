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
