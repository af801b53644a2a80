"""URM (models/urm/urm.py) beyond the fixtures: the bfloat16 ConvSwiGLU, loops as the ACT segment
count under both names, the single-latent carry, halting without a Q target, exploration."""
import pytest
import torch
import torch.nn.functional as F

from conftest import random_batch
from models.layers import ConvSwiGLU
from models.losses import ACTLossHead
from models.urm.urm import URM


def config(**overrides):
    cfg = dict(batch_size=3, seq_len=16, puzzle_emb_ndim=32, num_puzzle_identifiers=4, vocab_size=6, loops=3, num_layers=2,
               H_cycles=2, L_cycles=2, hidden_size=32, expansion=2, num_heads=2, pos_encodings="rope",
               halt_exploration_prob=0.0, forward_dtype="float32")
    cfg.update(overrides)
    return cfg


def test_conv_swiglu_convolves_in_bfloat16_over_the_previous_and_current_position():
    torch.manual_seed(0)
    mlp = ConvSwiGLU(hidden_size=32, expansion=2)
    assert mlp.dwconv.weight.dtype == mlp.dwconv.bias.dtype == torch.bfloat16
    assert mlp.gate_up_proj.weight.dtype == torch.float32 and mlp.dwconv.weight.shape == (256, 1, 2)
    x = torch.randn(2, 7, 32)
    out = mlp(x)
    assert out.dtype == torch.bfloat16, "the down projection runs in the convolution's bfloat16"

    # By hand: a[t] = silu(gate) * up rounded to bfloat16; conv[t] = w0 * a[t-1] + w1 * a[t] + b.
    gate, up = F.linear(x, mlp.gate_up_proj.weight).chunk(2, dim=-1)
    a = (F.silu(gate) * up).to(torch.bfloat16).float()
    w, b = mlp.dwconv.weight.float()[:, 0], mlp.dwconv.bias.float()
    previous = F.pad(a, (0, 0, 1, 0))[:, :-1]
    conv = (previous * w[:, 0] + a * w[:, 1] + b).to(torch.bfloat16)
    expected = F.linear(F.silu(conv.float()), mlp.down_proj.weight)
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)

    # Position t sees t-1 and t only: changing position 3 changes outputs 3 and 4, nothing else.
    x2 = x.clone()
    x2[:, 3] += 1
    changed = (mlp(x2) != out).any(-1).any(0)
    assert changed.tolist() == [False, False, False, True, True, False, False]


def test_state_dict_names_and_single_latent_carry():
    model = URM(config())
    keys = set(model.state_dict())
    assert {"inner.init_hidden", "inner.layers.1.mlp.dwconv.weight", "inner.layers.1.self_attn.qkv_proj.weight"} <= keys
    assert not any(k.startswith("inner.H_init") or "L_level" in k for k in keys)
    b = random_batch()
    carry = model.initial_carry(b)
    assert list(vars(carry.inner_carry)) == ["z_hidden"]
    carry, _ = model(carry, b)
    assert carry.inner_carry.z_hidden.shape == (3, 17, 32)  # one puzzle position prepended
    # A halted row restarts from init_hidden.
    reset = model.inner.reset_carry(torch.tensor([True, False, False]), carry.inner_carry)
    torch.testing.assert_close(reset.z_hidden[0], model.inner.init_hidden.expand(17, 32))
    torch.testing.assert_close(reset.z_hidden[1:], carry.inner_carry.z_hidden[1:])


def test_loops_and_halt_max_steps_are_one_number():
    assert URM(config(loops=5)).config.halt_max_steps == 5
    model = URM({k: v for k, v in config(halt_max_steps=4).items() if k != "loops"})
    assert model.config.loops == 4
    assert URM(config(loops=16, halt_max_steps=2)).config.loops == 2, "halt_max_steps (evaluate.py's knob) wins"
    model.config.halt_max_steps = 7  # what evaluate.py does for test-time compute
    assert model.config.loops == 7
    model.config.loops = 6
    assert model.config.halt_max_steps == 6
    assert URM({k: v for k, v in config().items() if k != "halt_exploration_prob"}).config.halt_exploration_prob == 0.1
    with pytest.raises(ValueError, match="pos_encodings"):
        URM(config(pos_encodings="learned"))


def test_training_halts_on_positive_q_halt_without_q_target():
    model = URM(config()).train()
    with torch.no_grad():
        model.inner.q_head.bias.copy_(torch.tensor([0.5, 10.0]))  # q_halt > 0 although q_continue is larger
    head = ACTLossHead(model, "stablemax_cross_entropy")
    b = random_batch()
    carry, loss, metrics, outputs, all_halted = head(carry=head.initial_carry(b), batch=b, return_keys=["q_continue_logits"])
    assert all_halted and carry.steps.tolist() == [1, 1, 1]
    # The halt confidence reported by predict/analysis is that rule's: sigmoid(q_halt), q_continue plays no part.
    q_halt, q_continue = torch.tensor([0.5, -0.5]), torch.tensor([10.0, -10.0])
    assert torch.equal(model.halt_logit(q_halt, q_continue), q_halt)
    assert torch.equal(model.halt_logit(q_halt, q_continue) > 0, model.halt_signal(q_halt, q_continue))
    assert "q_continue_loss" not in metrics and "target_q_continue" not in outputs
    loss.backward()
    assert model.inner.layers[0].mlp.dwconv.weight.grad is not None and model.inner.init_hidden.grad is None

    model.eval()  # evaluation runs every segment whatever the Q head says
    with torch.no_grad():
        carry = model.initial_carry(b)
        for step in range(1, 4):
            carry, _ = model(carry, b)
            assert carry.halted.all() == (step == 3)


def test_exploration_keeps_some_rows_going():
    torch.manual_seed(0)
    model = URM(config(batch_size=64, loops=4, halt_exploration_prob=1.0)).train()
    with torch.no_grad():
        model.inner.q_head.bias.fill_(5.0)  # every row wants to halt at once
    b = random_batch(B=64)
    carry, _ = model(model.initial_carry(b), b)
    assert not carry.halted.all(), "with exploration 1.0 every row draws a minimum of 2..loops segments"


def test_only_the_last_round_is_back_propagated():
    """H_cycles - 1 rounds without gradient: the gradient is the same as a model with H_cycles=1
    started from the carry those rounds produce."""
    torch.manual_seed(0)
    full = URM(config(H_cycles=3, num_layers=1)).train()
    one = URM(config(H_cycles=1, num_layers=1)).train()
    one.load_state_dict(full.state_dict())
    b = random_batch()
    carry = full.initial_carry(b)
    carry.halted[:] = False
    carry.current_data = dict(b)
    carry.inner_carry = full.inner.reset_carry(torch.ones(3, dtype=torch.bool), carry.inner_carry)
    with torch.no_grad():
        x = full.inner._input_embeddings(b["inputs"], b["puzzle_identifiers"])
        h = carry.inner_carry.z_hidden
        for _ in range(2):
            h = full.inner._round(h, x, full.inner.cos_sin())
    _, out_full = full(carry, b)
    carry.inner_carry.z_hidden = h
    _, out_one = one(carry, b)
    torch.testing.assert_close(out_full["logits"], out_one["logits"])
    out_full["logits"].float().sum().backward()
    out_one["logits"].float().sum().backward()
    for (name, p), q in zip(full.named_parameters(), one.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
