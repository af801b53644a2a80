"""HRM behaviour beyond the fixtures: dtypes, shapes, halting, bad configs."""
import pytest
import torch

from models.hrm.hrm_act_v1 import HierarchicalReasoningModel_ACTV1
from models.losses import ACTLossHead


def config(**overrides):
    cfg = dict(batch_size=4, seq_len=36, puzzle_emb_ndim=32, num_puzzle_identifiers=3, vocab_size=8,
               H_cycles=2, L_cycles=2, H_layers=1, L_layers=1, hidden_size=32, expansion=2, num_heads=2,
               pos_encodings="rope", halt_max_steps=3, halt_exploration_prob=0.0, forward_dtype="float32", causal=False)
    cfg.update(overrides)
    return cfg


def batch(B=4, S=36, vocab=8, ids=3):
    g = torch.Generator().manual_seed(1)
    return {"inputs": torch.randint(0, vocab, (B, S), generator=g, dtype=torch.int32),
            "labels": torch.randint(0, vocab, (B, S), generator=g, dtype=torch.int32),
            "puzzle_identifiers": torch.randint(0, ids, (B,), generator=g, dtype=torch.int32)}


def with_nonzero_puzzle_emb(model):
    with torch.no_grad():
        model.inner.puzzle_emb.weights.normal_()
    return model


def test_bf16_forward_on_cpu_agrees_with_float32():
    torch.manual_seed(0)
    m32 = with_nonzero_puzzle_emb(HierarchicalReasoningModel_ACTV1(config())).eval()
    m16 = HierarchicalReasoningModel_ACTV1(config(forward_dtype="bfloat16")).eval()
    m16.load_state_dict(m32.state_dict())
    b = batch()
    with torch.inference_mode():
        _, out32 = m32(m32.initial_carry(b), b)
        carry16, out16 = m16(m16.initial_carry(b), b)
    assert out16["logits"].dtype == torch.bfloat16 and carry16.inner_carry.z_H.dtype == torch.bfloat16
    assert out16["q_halt_logits"].dtype == torch.float32
    scale = out32["logits"].abs().max()
    err = (out16["logits"].float() - out32["logits"]).abs().max() / scale
    assert err < 3e-2, f"bf16 logits deviate by {err:.3g} of their range"
    assert (out16["logits"].argmax(-1) == out32["logits"].argmax(-1)).float().mean() > 0.95


def test_shapes_do_not_assume_9x9_and_puzzle_emb_spans_two_positions():
    model = with_nonzero_puzzle_emb(HierarchicalReasoningModel_ACTV1(config(puzzle_emb_ndim=48)))  # ceil(48/32) = 2
    assert model.inner.puzzle_emb_len == 2
    b = batch()
    carry, out = model(model.initial_carry(b), b)
    assert out["logits"].shape == (4, 36, 8)
    assert carry.inner_carry.z_H.shape == (4, 38, 32)


def test_learned_positions_and_no_puzzle_embedding():
    model = HierarchicalReasoningModel_ACTV1(config(pos_encodings="learned", puzzle_emb_ndim=0))
    keys = set(model.state_dict())
    assert "inner.embed_pos.embedding_weight" in keys and not any("puzzle_emb" in k for k in keys)
    assert not hasattr(model.inner, "rotary_emb")
    b = batch()
    _, out = model(model.initial_carry(b), b)
    out["logits"].float().sum().backward()
    assert model.inner.embed_pos.embedding_weight.grad is not None


def test_eval_runs_every_row_to_halt_max_steps():
    model = ACTLossHead(HierarchicalReasoningModel_ACTV1(config(halt_max_steps=4)), "stablemax_cross_entropy").eval()
    with torch.no_grad():
        model.model.inner.q_head.bias.fill_(10.0)  # Q says "halt now"; eval must ignore it
    b = batch()
    carry = model.initial_carry(b)
    calls = 0
    with torch.inference_mode():
        while True:
            carry, _, metrics, _, all_halted = model(carry=carry, batch=b, return_keys=[])
            calls += 1
            if all_halted:
                break
    assert calls == 4 and int(metrics["count"]) == 4 and int(metrics["steps"]) == 16


def test_training_halts_on_q_and_exploration_forces_minimum_steps():
    torch.manual_seed(0)
    model = HierarchicalReasoningModel_ACTV1(config(halt_max_steps=5, halt_exploration_prob=1.0)).train()
    with torch.no_grad():
        model.inner.q_head.bias.copy_(torch.tensor([10.0, -10.0]))  # q_halt > q_continue everywhere
    b = batch()
    carry = model.initial_carry(b)
    carry, out = model(carry, b)
    assert "target_q_continue" in out
    assert not carry.halted.any(), "with exploration prob 1 every row needs at least 2 steps"
    model.config.halt_exploration_prob = 0.0
    carry = model.initial_carry(b)
    carry, _ = model(carry, b)
    assert carry.halted.all(), "q_halt > q_continue halts in training"


def test_no_act_continue_halts_on_q_halt_alone_and_skips_the_q_target():
    """HRM with TRM's no_ACT_continue: the halt rule is q_halt > 0 whatever q_continue says, no
    bootstrapped target (so no extra forward, one fewer block pass per step in the FLOP count),
    and the q_continue head gets no gradient. The default keeps HRM's Q-learning (the fixtures)."""
    torch.manual_seed(0)
    model = HierarchicalReasoningModel_ACTV1(config(no_ACT_continue=True)).train()
    assert not HierarchicalReasoningModel_ACTV1(config()).config.no_ACT_continue
    with torch.no_grad():
        model.inner.q_head.bias.copy_(torch.tensor([0.5, 10.0]))  # q_halt > 0 although q_continue is larger
    head = ACTLossHead(model, "softmax_cross_entropy")
    b = batch()
    carry, loss, metrics, outputs, _ = head(carry=head.initial_carry(b), batch=b, return_keys=["q_halt_logits"])
    assert carry.inner_carry.z_H.shape[0] == 4 and carry.halted.all()
    assert "target_q_continue" not in outputs and "q_continue_loss" not in metrics
    loss.backward()
    assert model.inner.q_head.weight.grad[1].abs().sum() == 0 and model.inner.q_head.weight.grad[0].abs().sum() > 0
    q_halt, q_continue = torch.tensor([-1.0, 0.5, 2.0]), torch.tensor([-2.0, 3.0, 1.0])
    assert model.halt_signal(q_halt, q_continue).tolist() == [False, True, True]
    torch.testing.assert_close(model.halt_logit(q_halt, q_continue), q_halt)


@pytest.mark.parametrize("overrides, message", [
    (dict(pos_encodings="alibi"), "pos_encodings"),
    (dict(num_heads=3), "num_heads (3) must divide hidden_size (32)"),
    (dict(forward_dtype="float13"), "forward_dtype"),
    (dict(halt_max_steps=0), "halt_max_steps"),
])
def test_bad_config_is_a_one_line_error(overrides, message):
    with pytest.raises(ValueError) as e:
        HierarchicalReasoningModel_ACTV1(config(**overrides))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith("HierarchicalReasoningModel_ACTV1 config:")
