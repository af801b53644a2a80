"""TRM behaviour beyond the fixtures: the HRM-style Q target, mlp_t, positions, halting rule."""
import torch

from conftest import random_batch
from models.losses import ACTLossHead
from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV1


def config(**overrides):
    cfg = dict(batch_size=3, seq_len=16, puzzle_emb_ndim=32, puzzle_emb_len=2, num_puzzle_identifiers=4, vocab_size=6,
               H_cycles=2, L_cycles=2, H_layers=0, L_layers=1, hidden_size=32, expansion=2, num_heads=2,
               pos_encodings="rope", halt_max_steps=3, halt_exploration_prob=0.0, forward_dtype="float32",
               mlp_t=False, no_ACT_continue=True)
    cfg.update(overrides)
    return cfg


def test_act_continue_computes_hrm_q_target():
    torch.manual_seed(0)
    model = TinyRecursiveReasoningModel_ACTV1(config(no_ACT_continue=False)).train()
    with torch.no_grad():
        model.inner.q_head.weight.normal_(0, 0.5)
    head = ACTLossHead(model, "softmax_cross_entropy")
    b = random_batch()
    carry = head.initial_carry(b)
    carry, loss, metrics, outputs, _ = head(carry=carry, batch=b, return_keys=["target_q_continue", "q_continue_logits"])
    assert "q_continue_loss" in metrics and torch.isfinite(loss)

    # Independent recomputation: the next segment's Q values from the carry just produced.
    with torch.no_grad():
        _, _, (next_halt, next_cont) = model.inner(carry.inner_carry, carry.current_data)
    is_last = carry.steps >= model.config.halt_max_steps
    expected = torch.sigmoid(torch.where(is_last, next_halt, torch.maximum(next_halt, next_cont)))
    torch.testing.assert_close(outputs["target_q_continue"], expected)
    loss.backward()
    assert model.inner.q_head.weight.grad[1].abs().sum() > 0, "q_continue must receive a gradient"


def test_no_act_continue_halts_on_positive_q_halt_only():
    model = TinyRecursiveReasoningModel_ACTV1(config()).train()
    with torch.no_grad():
        model.inner.q_head.bias.copy_(torch.tensor([0.5, 10.0]))  # q_halt > 0 although q_continue is larger
    b = random_batch()
    carry, out = model(model.initial_carry(b), b)
    assert carry.halted.all() and "target_q_continue" not in out


def test_halt_logit_is_the_halting_rule():
    """The halt confidence sigmoid(halt_logit) is above 0.5 exactly where the model halts:
    q_halt alone with no_ACT_continue, q_halt - q_continue otherwise (as HRM)."""
    g = torch.Generator().manual_seed(0)
    q_halt, q_continue = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    for no_continue in (True, False):
        model = TinyRecursiveReasoningModel_ACTV1(config(no_ACT_continue=no_continue))
        logit = model.halt_logit(q_halt, q_continue)
        assert torch.equal(logit > 0, model.halt_signal(q_halt, q_continue))
        torch.testing.assert_close(logit, q_halt if no_continue else q_halt - q_continue)


def test_mlp_t_without_positions():
    model = TinyRecursiveReasoningModel_ACTV1(config(mlp_t=True, pos_encodings="none"))
    keys = set(model.state_dict())
    assert "inner.L_level.layers.0.mlp_t.gate_up_proj.weight" in keys
    assert not any("self_attn" in k or "embed_pos" in k for k in keys)
    # mlp_t mixes over seq_len + puzzle_emb_len = 18 positions
    assert model.inner.L_level.layers[0].mlp_t.gate_up_proj.weight.shape[1] == 18
    b = random_batch()
    carry, out = model(model.initial_carry(b), b)
    assert out["logits"].shape == (3, 16, 6) and carry.inner_carry.z_H.shape == (3, 18, 32)


def test_no_puzzle_embedding_prepends_nothing():
    model = TinyRecursiveReasoningModel_ACTV1(config(puzzle_emb_ndim=0, puzzle_emb_len=16))
    assert model.inner.puzzle_emb_len == 0
    b = random_batch()
    carry, out = model(model.initial_carry(b), b)
    assert out["logits"].shape == (3, 16, 6) and carry.inner_carry.z_H.shape == (3, 16, 32)
