"""Replay the original code's recorded runs (``../shared/reference/*.pt``) and compare every tensor.

Each fixture holds a model config, its initial weights, one batch, the outputs of every eval
segment until all rows halt, and three training steps (loss, metrics, outputs, carry,
gradients of ``loss / global_batch_size``, and the weights after one SignSGD step on the
puzzle embedding plus one AdamATan2 step, or one Muon step for ``urm/urm_muon.pt``, on the
parameters).

URM's depthwise convolution runs in bfloat16. Another CPU kernel for its bfloat16 matmul
(another oneDNN build or instruction set) rounds a value to the other side of a bfloat16 step
now and then, and that 2^-8 relative change spreads through the row (and, through the
sign-like first optimizer steps, into the weights): replays of such a model agree to 3e-3 in
evaluation and 3e-2 after three training steps, not to float32 round-off, so they are compared
with ``BF16_RTOL`` (a flipped or bias-less convolution, or the input injected once per round,
is off by 0.6 to 1). Rows that meet no such rounding match bit for bit here; halting, steps and
counts match exactly. The weights after a step are compared where the recorded gradient is above
float32 noise (see ``settled_elements``), and each step starts from the recorded weights. What the optimizers do is checked tightly on its own: fed the recorded
gradients, they must give the recorded weights within float32 round-off
(``test_optimizer_steps_on_recorded_gradients``). tests/test_urm.py checks the bfloat16
convolution itself.
"""
import glob
import os

import pytest
import torch

from models.act import carry_fields
from models.losses import ACTLossHead
from utils.sign_sgd import CastedSparseEmbeddingSignSGD_Distributed
from utils.adam_atan2 import AdamATan2
from utils.functions import load_model_class
from utils.muon import Muon, muon_param_groups

# HRM_REFERENCE_DIR: where the fixtures are when ../shared is not beside the project (the GPU
# check's bundle carries copies of the two main ones).
REFERENCE_DIR = os.environ.get("HRM_REFERENCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference")
# The originals' two main models, the TRM repository's ablation models (SamsungSAILLab/TinyRecursiveModels,
# models/recursive_reasoning/), then URM (UbiquantAI/URM, arXiv 2512.14693).
FIXTURES = sorted(glob.glob(os.path.join(REFERENCE_DIR, "*.pt"))) + sorted(glob.glob(os.path.join(REFERENCE_DIR, "variants", "*.pt"))) \
    + sorted(glob.glob(os.path.join(REFERENCE_DIR, "urm", "*.pt")))

if not FIXTURES:
    pytest.skip(f"reference fixtures not found in {os.path.abspath(REFERENCE_DIR)} (clone with ../shared beside the project to run these)",
                allow_module_level=True)

RTOL = 1e-4
BF16_RTOL = 1e-1  # models with bfloat16 kernels inside a float32 forward (URM), see above
OPTIMIZER_RTOL = 1e-5
# CPU always; CUDA (float32, no TF32: torch's default) where there is a GPU, as a `cuda` test.
DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])


def assert_close(actual, expected, what, rtol=RTOL, scale=None):
    """Integers exactly; floats to ``rtol`` of ``scale`` (default: the largest recorded magnitude)."""
    if expected.dtype in (torch.bool, torch.int32, torch.int64):
        assert torch.equal(actual.cpu().to(expected.dtype), expected), f"{what}: {actual} != {expected}"
        return
    actual = actual.detach().cpu().to(torch.float64)
    expected = expected.to(torch.float64)
    scale = (expected.abs().max() if scale is None else torch.as_tensor(scale, dtype=torch.float64)).clamp_min(1e-6)
    err = (actual - expected).abs().max() / scale
    assert err <= rtol, f"{what}: relative error {err:.2e} > {rtol:g}"


def model_rtol(fixture) -> float:
    bf16_inside = any(v.dtype == torch.bfloat16 for v in fixture["state_dict"].values())
    return BF16_RTOL if bf16_inside and fixture["model_config"].get("forward_dtype") == "float32" else RTOL


def build(fixture, device="cpu"):
    model_cls = load_model_class(fixture["arch_name"])
    with torch.device(device):
        model = ACTLossHead(model_cls(dict(fixture["model_config"])), loss_type=fixture["loss_type"])
    assert sorted(model.state_dict().keys()) == fixture["state_dict_keys"]
    model.load_state_dict(fixture["state_dict"], strict=True)
    return model


def optimizers(fixture, model):
    """The fixture's optimizers at its fixed learning rates: SignSGD on the puzzle embedding, then
    AdamATan2 on every parameter, or Muon grouped as URM's ``use_muon=True`` does it."""
    hp = fixture["train_hparams"]
    sparse_opt = CastedSparseEmbeddingSignSGD_Distributed(model.model.puzzle_emb.buffers(), world_size=1,
                                                         lr=hp["puzzle_emb_lr"], weight_decay=hp["puzzle_emb_weight_decay"])
    if fixture.get("optimizer") == "muon":
        return [sparse_opt, Muon(muon_param_groups(model.parameters()), lr=hp["lr"], weight_decay=hp["weight_decay"],
                                 adamw_betas=tuple(hp["betas"]))]
    return [sparse_opt, AdamATan2(model.parameters(), lr=hp["lr"], betas=tuple(hp["betas"]), weight_decay=hp["weight_decay"])]


def compare_step(result, expected, what, rtol=RTOL):
    carry, loss, metrics, outputs, _all_halted = result
    assert_close(loss.detach(), expected["loss"], f"{what} loss", rtol)
    assert set(metrics) == set(expected["metrics"]), f"{what} metric names"
    for k, v in expected["metrics"].items():
        assert_close(metrics[k], v, f"{what} metric {k}", rtol)
    assert set(outputs) == set(expected["outputs"]), f"{what} output names"
    for k, v in expected["outputs"].items():
        assert_close(outputs[k], v, f"{what} output {k}", rtol)
    assert_close(carry.steps, expected["steps"], f"{what} steps")
    assert_close(carry.halted, expected["halted"], f"{what} halted")
    latents = carry_fields(carry.inner_carry)
    recorded = sorted(k for k in expected if k.startswith("z_"))
    assert recorded and sorted(latents) == recorded, f"{what} carry fields {sorted(latents)} != recorded {recorded}"
    for name in recorded:
        assert_close(latents[name], expected[name], f"{what} {name}", rtol)


@pytest.fixture(params=FIXTURES, ids=lambda p: os.path.basename(p)[:-3])
def fixture(request):
    return torch.load(request.param, weights_only=True)


@pytest.mark.parametrize("device", DEVICES)
def test_eval_segments_match(fixture, device):
    if not fixture["eval_steps"]:
        pytest.skip("this fixture records training steps only (its model's eval replay is in another fixture)")
    model = build(fixture, device).eval()
    rtol = model_rtol(fixture)
    batch = {k: v.to(device) for k, v in fixture["batch"].items()}
    eval_keys = [k for k in fixture["return_keys"] if k != "target_q_continue"]
    with torch.inference_mode():
        carry = model.initial_carry(batch)
        for i, expected in enumerate(fixture["eval_steps"]):
            result = model(carry=carry, batch=batch, return_keys=eval_keys)
            compare_step(result, expected, f"eval step {i}", rtol)
            carry = result[0]
        assert bool(result[4]), "all rows must have halted after the recorded eval steps"


@pytest.mark.parametrize("device", DEVICES)
def test_train_steps_match(fixture, device):
    model = build(fixture, device).train()
    hp = fixture["train_hparams"]
    batch = {k: v.to(device) for k, v in fixture["batch"].items()}
    rtol = model_rtol(fixture)
    opts = optimizers(fixture, model)
    named = dict(model.named_parameters())

    carry = model.initial_carry(batch)
    settled = {}
    for i, expected in enumerate(fixture["train_steps"]):
        result = model(carry=carry, batch=batch, return_keys=fixture["return_keys"])
        compare_step(result, expected, f"train step {i}", rtol)
        carry, loss = result[0], result[1]
        (loss / hp["global_batch_size"]).backward()

        assert set(expected["grads"]) == {k for k, p in named.items() if p.grad is not None}
        # With bfloat16 kernels a gradient that is a small sum of cancelling terms (the Q head's
        # bias) is judged against the step's largest gradient, not its own size.
        grad_scale = max(g.abs().max() for g in expected["grads"].values()) if rtol == BF16_RTOL else None
        for k, g in expected["grads"].items():
            assert_close(named[k].grad, g, f"train step {i} grad {k}", rtol, grad_scale)
        assert_close(model.model.puzzle_emb.local_weights.grad, expected["puzzle_emb_local_grad"], f"train step {i} puzzle_emb grad", rtol)

        for opt in opts:
            opt.step()
            opt.zero_grad()
        state = model.state_dict()
        # The optimizers' moments remember earlier gradients: an element stays settled only while
        # its gradient was above the noise at every step so far.
        now = settled_elements(fixture, expected, rtol, grad_scale)
        settled = {k: (mask & settled[k][0] if k in settled else mask, lr) for k, (mask, lr) in now.items()} if i else now
        for k, v in expected["state_dict_after"].items():
            what = f"train step {i} weight {k} after optimizer step"
            if k not in settled:
                assert_close(state[k], v, what, rtol)
                continue
            mask, lr = settled[k]
            if mask.any():
                assert_close(state[k][mask.to(state[k].device)], v[mask], what, rtol, scale=v.abs().max())
            # Elsewhere the step's sign is not determined by the data: at most two opposite steps apart.
            off = (state[k].detach().cpu().double() - v.double())[~mask].abs()
            assert off.numel() == 0 or off.max() <= 4 * lr + rtol * v.abs().max(), f"{what}: {off.max():.2e} where the gradient is ~0"
        # The next step starts from the recorded weights, so that such a sign cannot carry over into
        # the next forward (the optimizer states keep what this replay computed).
        model.load_state_dict(expected["state_dict_after"], strict=True)


def settled_elements(fixture, expected, rtol, grad_scale):
    """``{weight key: (mask, lr)}``: the elements whose recorded gradient is above the noise that the
    gradient comparison allows (``rtol`` of its scale), and the learning rate that moves them.

    The first AdamATan2 step moves every weight by about +-lr whatever the size of its gradient,
    and SignSGD moves a puzzle-embedding element by +-lr by the sign of its summed gradient; where
    the recorded gradient is within float32 noise of zero (tens of elements per fixture), another
    summation order (another CPU's kernels, a GPU) may give the other sign and a step ~2 lr away.
    Those elements are compared to that bound instead; every other one to ``rtol``.
    """
    hp, out = fixture["train_hparams"], {}
    for k, g in expected["grads"].items():
        scale = grad_scale if grad_scale is not None else g.abs().max()
        out[k] = (g.abs() > rtol * scale, hp["lr"])
    from models.sparse_embedding import sum_rows_by_id
    ids, inverse = fixture["batch"]["puzzle_identifiers"].long().unique(return_inverse=True)
    local = expected["puzzle_emb_local_grad"]
    summed = sum_rows_by_id(local, inverse, len(ids))
    key = next(k for k in expected["state_dict_after"] if k.endswith("puzzle_emb.weights"))
    mask = torch.ones_like(expected["state_dict_after"][key], dtype=torch.bool)
    mask[ids] = summed.abs() > rtol * local.abs().max()
    out[key] = (mask, hp["puzzle_emb_lr"])
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_optimizer_steps_on_recorded_gradients(fixture, device):
    """The optimizers alone: each step starts from the recorded weights before it, is fed the
    recorded gradients and must give the recorded weights after it, to float32 round-off."""
    model = build(fixture, device).train()
    opts = optimizers(fixture, model)
    named = dict(model.named_parameters())
    embedding = model.model.puzzle_emb
    before = fixture["state_dict"]
    for i, expected in enumerate(fixture["train_steps"]):
        model.load_state_dict(before, strict=True)
        for k, p in named.items():
            p.grad = expected["grads"][k].to(device) if k in expected["grads"] else None
        # The puzzle rows of the step: every row of the batch (a row that did not halt keeps its example).
        embedding.local_ids.copy_(fixture["batch"]["puzzle_identifiers"])
        embedding.local_weights.grad = expected["puzzle_emb_local_grad"].to(device)
        for opt in opts:
            opt.step()
            opt.zero_grad()
        state = model.state_dict()
        for k, v in expected["state_dict_after"].items():
            what = f"train step {i} weight {k} from the recorded gradients"
            if v.dtype == torch.bfloat16:
                # A bfloat16 weight (URM's convolution) may land one rounding step away.
                ulps = ((state[k].double().cpu() - v.double()).abs() / (v.double().abs() * 2.0 ** -7).clamp_min(1e-30)).max()
                assert ulps <= 1, f"{what}: {ulps:.2f} bfloat16 steps away"
            else:
                assert_close(state[k], v, what, OPTIMIZER_RTOL)
        before = expected["state_dict_after"]
