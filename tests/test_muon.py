"""utils/muon.py beyond the fixture (tests/test_reference_fixtures.py replays URM's own Muon steps):
the Newton–Schulz orthogonalisation, the update formulas, grouping, and saving/loading its state."""
import math

import pytest
import torch

from utils.muon import Muon, muon_param_groups, newton_schulz


@pytest.mark.parametrize("shape", [(64, 16), (16, 64), (32, 32)])
def test_newton_schulz_flattens_the_singular_values(shape):
    torch.manual_seed(0)
    g = torch.randn(shape) @ torch.diag(torch.logspace(-2, 1, shape[1]))  # badly conditioned
    # URM's coefficients are tuned for speed: after its 5 steps singular values spread over
    # roughly 0.1..1.9 (a 1000x spread in g); the 8 tabulated steps bring them to 1.
    X = newton_schulz(g, steps=8)
    assert X.shape == g.shape and X.dtype == torch.float32
    s = torch.linalg.svdvals(X)
    assert s.min() > 0.85 and s.max() < 1.01, f"singular values {s.min():.2f}..{s.max():.2f}"
    s5 = torch.linalg.svdvals(newton_schulz(g, steps=5))
    assert s5.min() > 0.05 and s5.max() < 2, f"singular values after 5 steps {s5.min():.2f}..{s5.max():.2f}"
    # Same singular vectors: X is (roughly) U V^T of g.
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    assert torch.nn.functional.cosine_similarity((u @ vh).flatten(), X.flatten(), dim=0) > 0.95


def test_newton_schulz_of_a_stack_is_each_matrix_on_its_own():
    torch.manual_seed(0)
    for shape in [(3, 24, 8), (2, 8, 24)]:
        stack = torch.randn(shape)
        together = newton_schulz(stack, steps=5)
        alone = torch.stack([newton_schulz(m, steps=5) for m in stack])
        # Batched and single matmuls may round differently (another CPU's kernels), and five
        # Newton-Schulz steps amplify a 1-ulp change of the input to ~2e-5 in the output (measured):
        # the bound is 10x that, far below what mixing the matrices of a stack would change (~1).
        torch.testing.assert_close(together, alone, rtol=0, atol=2e-4)


def test_same_shape_weights_step_as_they_would_one_by_one():
    """The step orthogonalises same-shape weights as one stack; each must move as the formula says."""
    torch.manual_seed(0)
    ws = [torch.nn.Parameter(torch.randn(6, 4)) for _ in range(3)] + [torch.nn.Parameter(torch.randn(4, 5))]
    w0 = [w.detach().clone() for w in ws]
    lr, wd, mom = 0.02, 0.1, 0.95
    opt = Muon([dict(params=ws, use_muon=True)], lr=lr, weight_decay=wd, momentum=mom)
    grads = [torch.randn_like(w) for w in ws]
    for w, g in zip(ws, grads):
        w.grad = g.clone()
    opt.step()
    for w, w_init, g in zip(ws, w0, grads):
        X = newton_schulz((g + mom * g).to(torch.bfloat16), 5)
        torch.testing.assert_close(w.detach(), w_init * (1 - lr * wd) - lr * math.sqrt(max(w.shape)) * 0.2 * X)
        torch.testing.assert_close(opt.state[w]["muon_buffer"], g)


def test_muon_and_adamw_steps_follow_the_formulas():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 4))
    b = torch.nn.Parameter(torch.randn(4))
    w0, b0 = w.detach().clone(), b.detach().clone()
    lr, wd, mom = 0.02, 0.1, 0.95
    opt = Muon([dict(params=[w], use_muon=True), dict(params=[b], use_muon=False)], lr=lr, weight_decay=wd, momentum=mom,
               adamw_betas=(0.9, 0.95))
    gw, gb = torch.randn(8, 4), torch.randn(4)
    w.grad, b.grad = gw.clone(), gb.clone()
    opt.step()

    buf = gw  # first step: buffer = g, Nesterov update g + momentum * buffer
    X = newton_schulz((gw + mom * buf).to(torch.bfloat16), 5)
    torch.testing.assert_close(w.detach(), w0 * (1 - lr * wd) - lr * math.sqrt(8) * 0.2 * X)
    m, v = 0.1 * gb, 0.05 * gb ** 2
    scale = (1 - 0.9) / math.sqrt(1 - 0.95)
    torch.testing.assert_close(b.detach(), b0 * (1 - lr * wd) - lr / scale * m / (1e-8 + v.sqrt()))
    assert opt.param_groups[1]["step"] == 1 and set(opt.state[w]) == {"muon_buffer"}
    assert set(opt.state[b]) == {"adamw_exp_avg", "adamw_exp_avg_sq"}


def test_param_groups_and_bad_groups():
    conv = torch.nn.Conv1d(4, 4, 2, groups=4)
    lin = torch.nn.Linear(4, 3)
    params = list(conv.parameters()) + list(lin.parameters())
    groups = muon_param_groups(params)
    assert [g["use_muon"] for g in groups] == [True, False]
    assert groups[0]["params"] == [lin.weight] and len(groups[1]["params"]) == 3
    with pytest.raises(ValueError, match="not 2-D"):
        Muon([dict(params=[conv.weight], use_muon=True)])
    Muon(groups, lr=0)  # the schedule sets lr each step; it may start at 0


def muon_run(sudoku4, *extra):
    """A tiny HRM run's training state (nothing trained yet) with ``optimizer=muon`` and ``extra`` overrides."""
    from conftest import TINY_HRM, in_process_run
    _, _, state = in_process_run(sudoku4, ["epochs=1", "eval_interval=1", "global_batch_size=8", "evaluators=[]", "optimizer=muon", "compile=false",
                                           *TINY_HRM, *extra])
    return state


def test_hidden_layers_only_leave_embeddings_and_heads_to_the_adamw_branch(sudoku4):
    """``muon_params=hidden_layers``: the repeated reasoning blocks' weights under Muon; the token
    embedding, the output and Q heads with the biases under the AdamW branch. The default keeps
    URM's grouping (every 2-D weight under Muon)."""
    lin, emb = torch.nn.Linear(4, 3), torch.nn.Embedding(5, 4)
    groups = muon_param_groups([emb.weight, *lin.parameters()], hidden=[lin.weight])
    assert groups[0]["params"] == [lin.weight] and groups[1]["params"] == [emb.weight, lin.bias]

    def muon_names(*extra):
        state = muon_run(sudoku4, *extra)
        names = {id(p): n.split("inner.")[1] for n, p in state.model.named_parameters()}
        return [sorted(names[id(p)] for p in g["params"]) for g in state.optimizers[-1].param_groups]

    orthogonalised, adamw = muon_names("muon_params=hidden_layers")
    assert adamw == ["embed_tokens.embedding_weight", "lm_head.weight", "q_head.bias", "q_head.weight"]
    assert orthogonalised and all(n.startswith(("H_level.", "L_level.")) for n in orthogonalised)
    assert muon_names() == [sorted(["embed_tokens.embedding_weight", "lm_head.weight", "q_head.weight", *orthogonalised]), ["q_head.bias"]]


def test_muon_momentum_reaches_the_optimizer_and_is_checked(sudoku4):
    """``muon_momentum`` sets Muon's momentum (URM's 0.95 by default); outside [0, 1) it is a one-line error."""
    from utils.config import ConfigError

    def momentum(*extra):
        return {g["momentum"] for g in muon_run(sudoku4, *extra).optimizers[-1].param_groups}

    assert momentum() == {0.95} and momentum("muon_momentum=0.9") == {0.9}
    with pytest.raises(ConfigError, match=r"muon_momentum must be in \[0, 1\), got 1.0"):
        momentum("muon_momentum=1.0")


def test_state_dict_round_trip_continues_exactly():
    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
        return model, Muon(muon_param_groups(model.parameters()), lr=0.01, weight_decay=0.1)

    def step(model, opt, i):
        x = torch.randn(16, 6, generator=torch.Generator().manual_seed(i))
        model(x).square().sum().backward()
        opt.step()
        opt.zero_grad()

    model, opt = make()
    for i in range(4):
        step(model, opt, i)
    expected = [p.detach().clone() for p in model.parameters()]

    model, opt = make()
    for i in range(2):
        step(model, opt, i)
    saved_model, saved_opt = model.state_dict(), opt.state_dict()
    model, opt = make()
    model.load_state_dict(saved_model)
    opt.load_state_dict(saved_opt)
    for i in range(2, 4):
        step(model, opt, i)
    for a, b in zip(model.parameters(), expected):
        assert torch.equal(a.detach(), b)
