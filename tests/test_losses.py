"""Loss functions (stablemax, softmax) checked against direct float64 formulas."""
import pytest
import torch

from models.losses import IGNORE_LABEL_ID, ACTLossHead, segment_weights, softmax_cross_entropy, stablemax_cross_entropy


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


# ---- segment_loss_decay: CGAR's hierarchical supervision weighting ----------------------------

def test_segment_weights_decay_and_average_one():
    steps = torch.tensor([1, 2, 3, 4], dtype=torch.int32)
    w = segment_weights(steps, 0.5, num_segments=4)
    z = (1 + 0.5 + 0.25 + 0.125) / 4
    torch.testing.assert_close(w, torch.tensor([1, 0.5, 0.25, 0.125]) / z)
    assert abs(w.mean().item() - 1) < 1e-6, "over the N segments the weights average 1"
    assert torch.equal(segment_weights(steps, 1.0, num_segments=4), torch.ones(4))


def _carry_at_segments(head, batch, steps):
    """A carry whose rows are mid-run, each at its own segment: the next call runs segment steps + 1."""
    carry = head.initial_carry(batch)
    carry.inner_carry = head.model.inner.reset_carry(torch.ones(len(steps), dtype=torch.bool), carry.inner_carry)
    carry.steps = torch.tensor(steps, dtype=torch.int32)
    carry.halted = torch.zeros(len(steps), dtype=torch.bool)
    carry.current_data = dict(batch)
    return carry


def _loss_and_grads(head, batch, steps, keys=()):
    head.model.zero_grad()
    _, loss, metrics, outputs, _ = head(carry=_carry_at_segments(head, batch, steps), batch=batch, return_keys=list(keys))
    loss.backward()
    return loss.detach(), metrics, outputs, {n: p.grad.clone() for n, p in head.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["hrm", "trm"])
def test_segment_loss_decay_off_or_one_is_todays_loss_and_below_one_weighs_rows_by_segment(arch):
    """lambda=None and lambda=1 give today's loss and gradients bit for bit; lambda=0.6 weighs the
    loss of the row at segment t (tokens and Q head, HRM's bootstrapped q_continue included) by
    lambda^(t-1)/Z, recomputed here in float64 from the outputs."""
    from conftest import random_batch
    from models.hrm.hrm_act_v1 import HierarchicalReasoningModel_ACTV1
    from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV1

    cfg = dict(batch_size=4, seq_len=16, puzzle_emb_ndim=0, num_puzzle_identifiers=4, vocab_size=6, H_cycles=1, L_cycles=2,
               H_layers=1, L_layers=1, hidden_size=32, expansion=2, num_heads=2, pos_encodings="rope", halt_max_steps=4,
               halt_exploration_prob=0.0, forward_dtype="float32")
    torch.manual_seed(0)
    model = (HierarchicalReasoningModel_ACTV1(cfg) if arch == "hrm" else TinyRecursiveReasoningModel_ACTV1(cfg)).train()
    with torch.no_grad():
        model.inner.q_head.weight.normal_(0, 0.3)  # Q losses that differ per row
    batch, steps = random_batch(B=4), [0, 1, 2, 3]

    today = _loss_and_grads(ACTLossHead(model, "stablemax_cross_entropy"), batch, steps)
    for decay in (None, 1.0):
        same = _loss_and_grads(ACTLossHead(model, "stablemax_cross_entropy", segment_loss_decay=decay), batch, steps)
        assert torch.equal(same[0], today[0]) and same[3].keys() == today[3].keys()
        assert all(torch.equal(same[3][n], g) for n, g in today[3].items())

    keys = ["logits", "q_halt_logits", "q_continue_logits", "target_q_continue"]
    loss, metrics, out, grads = _loss_and_grads(ACTLossHead(model, "stablemax_cross_entropy", segment_loss_decay=0.6), batch, steps, keys)
    labels = batch["labels"].long()
    token = stablemax_cross_entropy(out["logits"], labels).sum(-1) / labels.shape[-1]
    correct = (out["logits"].argmax(-1) == labels).all(-1).double()
    bce = lambda x, y: torch.nn.functional.binary_cross_entropy_with_logits(x.double(), y.double(), reduction="none")  # noqa: E731
    rows = token + 0.5 * bce(out["q_halt_logits"], correct)
    assert ("target_q_continue" in out) == (arch == "hrm")
    if arch == "hrm":
        rows = rows + 0.5 * bce(out["q_continue_logits"], out["target_q_continue"])
    w = torch.tensor([0.6 ** t for t in range(4)], dtype=torch.float64)
    w = w / w.mean()
    assert w[0] > 1 > w[3], "later segments weigh less"
    torch.testing.assert_close(loss.double(), (w * rows).sum(), rtol=1e-6, atol=0)
    torch.testing.assert_close(metrics["lm_loss"].double(), today[1]["lm_loss"].double(), rtol=1e-12, atol=0)  # logged unweighted
    assert not torch.equal(grads["inner.lm_head.weight"], today[3]["inner.lm_head.weight"])


def test_segment_loss_decay_must_be_positive():
    with pytest.raises(ValueError, match="segment_loss_decay"):
        ACTLossHead(torch.nn.Identity(), "stablemax_cross_entropy", segment_loss_decay=0.0)
