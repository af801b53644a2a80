"""EMA update rule and swapping the averaged weights in and out."""
import torch
from torch import nn

from models.ema import EMAHelper


def test_update_rule_and_frozen_params_are_ignored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[1].bias.requires_grad_(False)
    ema = EMAHelper(mu=0.9)
    ema.register(model)
    assert "1.bias" not in ema.shadow
    start = {k: v.clone() for k, v in ema.shadow.items()}

    history = []
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        history.append({k: p.detach().clone() for k, p in model.named_parameters()})
        ema.update(model)

    for k in start:
        expected = start[k].double()
        for h in history:
            expected = 0.1 * h[k].double() + 0.9 * expected
        torch.testing.assert_close(ema.shadow[k].double(), expected, rtol=1e-6, atol=1e-6)


def test_swap_in_and_out_and_copy():
    torch.manual_seed(0)
    model = nn.Linear(3, 3)
    ema = EMAHelper(mu=0.5)
    ema.register(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    live = model.weight.detach().clone()

    with ema.applied(model):
        assert torch.equal(model.weight, ema.shadow["weight"])
    assert torch.equal(model.weight, live), "weights must be restored after the block"

    copy = ema.ema_copy(model)
    assert torch.equal(copy.weight, ema.shadow["weight"]) and torch.equal(model.weight, live)

    restored = EMAHelper(mu=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.shadow.keys() == ema.shadow.keys()
