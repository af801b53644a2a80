"""Loss functions (stablemax, softmax) checked against direct float64 formulas."""
import torch

from models.losses import IGNORE_LABEL_ID, ACTLossHead, softmax_cross_entropy, stablemax_cross_entropy


def test_stablemax_matches_formula_and_ignores():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7) * 4
    labels = torch.randint(0, 7, (3, 5))
    labels[0, 1] = IGNORE_LABEL_ID
    x = logits.double()
    s = torch.where(x < 0, 1 / (1 - x), x + 1)
    expected = -torch.log(s.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1) / s.sum(-1))
    expected[0, 1] = 0
    out = stablemax_cross_entropy(logits, labels)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected)


def test_softmax_cross_entropy_on_non_contiguous_logits():
    torch.manual_seed(0)
    full = torch.randn(4, 10, 6)
    logits = full[:, 3:]  # as the model returns them when puzzle-embedding positions are sliced off
    assert not logits.is_contiguous()
    labels = torch.randint(0, 6, (4, 7))
    labels[1, :3] = IGNORE_LABEL_ID
    out = softmax_cross_entropy(logits, labels)
    expected = -torch.log_softmax(logits.double(), -1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    expected[1, :3] = 0
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


def test_unknown_loss_type_is_a_clear_error():
    try:
        ACTLossHead(torch.nn.Identity(), loss_type="hinge")
    except ValueError as e:
        assert "hinge" in str(e) and "stablemax_cross_entropy" in str(e)
    else:
        raise AssertionError("expected ValueError")
