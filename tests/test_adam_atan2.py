"""AdamATan2 against a float64 evaluation of the formula, written out independently."""
import math

import pytest
import torch

from utils.adam_atan2 import AdamATan2


def reference_adam_atan2(p, grads, lr, betas, wd):
    """Float64, element by element in vector form, straight from the formula."""
    b1, b2 = betas
    p = p.double().clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.double()
        p = p * (1 - lr * wd)
        m = m + (1 - b1) * (g - m)
        v = v + (1 - b2) * (g * g - v)
        m_hat_scale = lr / (1 - b1 ** t)
        denom = torch.sqrt(v) / math.sqrt(1 - b2 ** t)
        p = p - m_hat_scale * torch.atan2(m, denom)
    return p


@pytest.mark.parametrize("wd", [0.0, 0.1, 1.0])
def test_matches_float64_formula_over_steps(wd):
    torch.manual_seed(0)
    shapes = [(7, 5), (13,), (3, 4, 2)]
    params = [torch.randn(s, requires_grad=True) for s in shapes]
    initial = [p.detach().clone() for p in params]
    grads = [[torch.randn(s) * 10 ** (-i % 3) for i in range(6)] for s in shapes]
    grads[0][2][0, 0] = 0.0  # exact zero gradient and (below) an all-zero tensor: atan2(0, 0) = 0
    grads[1] = [torch.zeros(13)] + grads[1][1:]

    lr, betas = 3e-3, (0.9, 0.95)
    opt = AdamATan2(params, lr=lr, betas=betas, weight_decay=wd)
    for step in range(6):
        for p, g in zip(params, grads):
            p.grad = g[step].clone()
        opt.step()

    for p, p0, g in zip(params, initial, grads):
        expected = reference_adam_atan2(p0, g, lr, betas, wd)
        torch.testing.assert_close(p.detach().double(), expected, rtol=1e-6, atol=1e-7)
    assert float(opt.state[params[0]]["step"]) == 6


def test_accepts_zero_lr_and_schedule_sets_it():
    p = torch.nn.Parameter(torch.ones(3))
    opt = AdamATan2([p], lr=0, weight_decay=0.1)
    p.grad = torch.ones(3)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3)), "lr=0 must leave the parameter unchanged"
    opt.param_groups[0]["lr"] = 0.5
    opt.step()
    assert (p.detach() < 1).all()


def test_skips_params_without_grad_and_rejects_bad_hparams():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = AdamATan2([a, b], lr=0.1)
    a.grad = torch.ones(2)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(2)) and b not in opt.state
    with pytest.raises(ValueError, match="learning rate"):
        AdamATan2([a], lr=-1)
    with pytest.raises(ValueError, match="betas"):
        AdamATan2([a], betas=(1.0, 0.9))


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    p1 = torch.nn.Parameter(torch.randn(10))
    p2 = torch.nn.Parameter(p1.detach().clone())
    o1, o2 = AdamATan2([p1], lr=0.01), AdamATan2([p2], lr=0.01)
    gs = [torch.randn(10) for _ in range(4)]
    for g in gs[:2]:
        p1.grad, p2.grad = g.clone(), g.clone()
        o1.step(), o2.step()
    o3 = AdamATan2([p2], lr=0.01)
    o3.load_state_dict(o2.state_dict())
    for g in gs[2:]:
        p1.grad, p2.grad = g.clone(), g.clone()
        o1.step(), o3.step()
    assert torch.equal(p1.detach(), p2.detach())


def test_compiled_update_is_bit_identical_to_foreach():
    """``compiled=True`` fuses the atan2 update with torch.compile; it must not change a single bit
    (weights, moments and step), over steps with a changing learning rate, for tensors whose size
    is a multiple of the vector width (compiled) and ragged ones (eager fallback)."""
    shapes = [(16, 24), (48, 16), (5, 7), (2,)]

    def run(compiled):
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
        opt = AdamATan2(params, lr=0.0, betas=(0.9, 0.95), weight_decay=0.1, compiled=compiled)
        for step in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen) * 10.0 ** -(step + 2)
            opt.param_groups[0]["lr"] = 2e-3 * (step + 1)
            opt.step()
        return params, opt

    (eager, eager_opt), (fused, fused_opt) = run(False), run(True)
    for a, b in zip(eager, fused):
        assert torch.equal(a, b), f"weights of shape {tuple(a.shape)} differ"
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(eager_opt.state[a][key], fused_opt.state[b][key]), key
