"""Replay the original code's recorded runs (``../shared/reference/*.pt``) and compare every tensor.

Each fixture holds a model config, its initial weights, one batch, the outputs of every eval
segment until all rows halt, and three training steps (loss, metrics, outputs, carry,
gradients of ``loss / global_batch_size``, and the weights after one SignSGD step on the
puzzle embedding plus one AdamATan2 step on the parameters).
"""
import glob
import os

import pytest
import torch

from models.act import carry_fields
from models.losses import ACTLossHead
from models.sparse_embedding import CastedSparseEmbeddingSignSGD_Distributed
from utils.adam_atan2 import AdamATan2
from utils.functions import load_model_class

# HRM_REFERENCE_DIR: where the fixtures are when ../shared is not beside the project (the GPU
# check's bundle carries copies of the two main ones).
REFERENCE_DIR = os.environ.get("HRM_REFERENCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference")
# The originals' two main models, then the TRM repository's ablation models (SPEC 4a).
FIXTURES = sorted(glob.glob(os.path.join(REFERENCE_DIR, "*.pt"))) + sorted(glob.glob(os.path.join(REFERENCE_DIR, "variants", "*.pt")))

if not FIXTURES:
    pytest.skip(f"reference fixtures not found in {os.path.abspath(REFERENCE_DIR)} (clone with ../shared beside the project to run these)",
                allow_module_level=True)

RTOL = 1e-4
# CPU always; CUDA (float32, no TF32: torch's default) where there is a GPU, as a `cuda` test.
DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])


def assert_close(actual, expected, what):
    if expected.dtype in (torch.bool, torch.int32, torch.int64):
        assert torch.equal(actual.cpu().to(expected.dtype), expected), f"{what}: {actual} != {expected}"
        return
    actual = actual.detach().cpu().to(torch.float64)
    expected = expected.to(torch.float64)
    scale = expected.abs().max().clamp_min(1e-6)
    err = (actual - expected).abs().max() / scale
    assert err <= RTOL, f"{what}: relative error {err:.2e} > {RTOL:g}"


def build(fixture, device="cpu"):
    model_cls = load_model_class(fixture["arch_name"])
    with torch.device(device):
        model = ACTLossHead(model_cls(dict(fixture["model_config"])), loss_type=fixture["loss_type"])
    assert sorted(model.state_dict().keys()) == fixture["state_dict_keys"]
    model.load_state_dict(fixture["state_dict"], strict=True)
    return model


def compare_step(result, expected, what):
    carry, loss, metrics, outputs, _all_halted = result
    assert_close(loss.detach(), expected["loss"], f"{what} loss")
    assert set(metrics) == set(expected["metrics"]), f"{what} metric names"
    for k, v in expected["metrics"].items():
        assert_close(metrics[k], v, f"{what} metric {k}")
    assert set(outputs) == set(expected["outputs"]), f"{what} output names"
    for k, v in expected["outputs"].items():
        assert_close(outputs[k], v, f"{what} output {k}")
    assert_close(carry.steps, expected["steps"], f"{what} steps")
    assert_close(carry.halted, expected["halted"], f"{what} halted")
    latents = carry_fields(carry.inner_carry)
    recorded = sorted(k for k in expected if k.startswith("z_"))
    assert recorded and sorted(latents) == recorded, f"{what} carry fields {sorted(latents)} != recorded {recorded}"
    for name in recorded:
        assert_close(latents[name], expected[name], f"{what} {name}")


@pytest.fixture(params=FIXTURES, ids=lambda p: os.path.basename(p)[:-3])
def fixture(request):
    return torch.load(request.param, weights_only=True)


@pytest.mark.parametrize("device", DEVICES)
def test_eval_segments_match(fixture, device):
    model = build(fixture, device).eval()
    batch = {k: v.to(device) for k, v in fixture["batch"].items()}
    eval_keys = [k for k in fixture["return_keys"] if k != "target_q_continue"]
    with torch.inference_mode():
        carry = model.initial_carry(batch)
        for i, expected in enumerate(fixture["eval_steps"]):
            result = model(carry=carry, batch=batch, return_keys=eval_keys)
            compare_step(result, expected, f"eval step {i}")
            carry = result[0]
        assert bool(result[4]), "all rows must have halted after the recorded eval steps"


@pytest.mark.parametrize("device", DEVICES)
def test_train_steps_match(fixture, device):
    model = build(fixture, device).train()
    hp = fixture["train_hparams"]
    batch = {k: v.to(device) for k, v in fixture["batch"].items()}
    sparse_opt = CastedSparseEmbeddingSignSGD_Distributed(model.model.puzzle_emb.buffers(), world_size=1,
                                                         lr=hp["puzzle_emb_lr"], weight_decay=hp["puzzle_emb_weight_decay"])
    adam = AdamATan2(model.parameters(), lr=hp["lr"], betas=tuple(hp["betas"]), weight_decay=hp["weight_decay"])
    named = dict(model.named_parameters())

    carry = model.initial_carry(batch)
    for i, expected in enumerate(fixture["train_steps"]):
        result = model(carry=carry, batch=batch, return_keys=fixture["return_keys"])
        compare_step(result, expected, f"train step {i}")
        carry, loss = result[0], result[1]
        (loss / hp["global_batch_size"]).backward()

        assert set(expected["grads"]) == {k for k, p in named.items() if p.grad is not None}
        for k, g in expected["grads"].items():
            assert_close(named[k].grad, g, f"train step {i} grad {k}")
        assert_close(model.model.puzzle_emb.local_weights.grad, expected["puzzle_emb_local_grad"], f"train step {i} puzzle_emb grad")

        sparse_opt.step()
        adam.step()
        sparse_opt.zero_grad()
        adam.zero_grad()
        state = model.state_dict()
        for k, v in expected["state_dict_after"].items():
            assert_close(state[k], v, f"train step {i} weight {k} after optimizer step")
