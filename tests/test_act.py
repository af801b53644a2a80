"""The shared ACT code (models/act.py): the model-owned carry, the construction hooks, the
adaptive evaluation of models with ``act_inference``, and the TRM paper's ablation models
beyond their fixtures."""
from dataclasses import dataclass

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO
from models.act import ACTInner, carry_fields
from models.losses import ACTLossHead
from utils.functions import load_model_class

BASELINE = "recursive_reasoning.transformers_baseline@Model_ACTV2"
HIER6 = "recursive_reasoning.trm_hier6@TinyRecursiveReasoningModel_ACTV1"


def config(**overrides):
    cfg = dict(batch_size=6, seq_len=16, puzzle_emb_ndim=32, puzzle_emb_len=1, num_puzzle_identifiers=4, vocab_size=6,
               H_cycles=2, L_cycles=3, H_layers=1, L_layers=1, hidden_size=32, expansion=2, num_heads=2,
               pos_encodings="rope", halt_max_steps=4, halt_exploration_prob=0.0, forward_dtype="float32")
    cfg.update(overrides)
    return cfg


def batch(B=6, S=16):
    g = torch.Generator().manual_seed(1)
    return {"inputs": torch.randint(0, 6, (B, S), generator=g, dtype=torch.int32),
            "labels": torch.randint(0, 6, (B, S), generator=g, dtype=torch.int32),
            "puzzle_identifiers": torch.randint(0, 4, (B,), generator=g, dtype=torch.int32)}


def test_construction_order_is_fixed_by_the_shared_code():
    with pytest.raises(TypeError, match="defines __init__"):
        class Bad(ACTInner):  # noqa: F841
            def __init__(self, config):
                super().__init__(config)

    @dataclass
    class Carry:
        h: torch.Tensor

    with pytest.raises(TypeError, match="named z_"):
        class BadCarry(ACTInner):  # noqa: F841
            carry_class = Carry


def test_hier6_carry_buffers_and_keys():
    torch.manual_seed(0)
    model = ACTLossHead(load_model_class(HIER6)(config()), "stablemax_cross_entropy")
    b = batch()
    carry = model.initial_carry(b)
    assert list(carry_fields(carry.inner_carry)) == ["z_H", "z_L1", "z_L2", "z_L3", "z_L4", "z_L5", "z_L6"]
    keys = model.state_dict().keys()
    assert {k for k in keys if k.endswith("_init")} == {"model.inner.H_init", *(f"model.inner.L{i}_init" for i in range(1, 7))}
    assert not any(".H_level." in k for k in keys)
    carry, loss, *_ = model(carry=carry, batch=b, return_keys=[])
    loss.backward()
    # Cycle steps 0..2 rewrote three latents; the other three are still their init buffers.
    inner = model.model.inner
    for i in range(1, 7):
        same = torch.equal(getattr(carry.inner_carry, f"z_L{i}"), getattr(inner, f"L{i}_init").expand_as(carry.inner_carry.z_H))
        assert same == (i > 3), f"z_L{i}"
    with pytest.raises(ValueError, match="L_cycles must be between 1 and 6"):
        load_model_class(HIER6)(config(L_cycles=7))


def test_adaptive_evaluation_keeps_each_row_as_it_was_when_it_halted():
    """With act_inference a row stops at its own first q_halt > q_continue; its outputs stay those of
    that segment (the run without act_inference goes through the same segments, so it has them)."""
    torch.manual_seed(0)
    adaptive = load_model_class(BASELINE)(config(act_inference=True)).eval()
    fixed = load_model_class(BASELINE)(config(act_inference=False)).eval()
    b = batch()

    def run_fixed():
        outputs, carry = [], fixed.initial_carry(b)
        for _ in range(4):
            carry, out = fixed(carry, b)
            outputs.append(out)
        assert carry.steps.tolist() == [4] * 6
        return outputs

    with torch.inference_mode():
        adaptive.inner.q_head.weight.normal_(0, 3.0)
        fixed.load_state_dict(adaptive.state_dict())
        # Shift q_halt so that half the rows want to stop after the first segment and the others later.
        first = run_fixed()[0]
        adaptive.inner.q_head.bias[0] -= (first["q_halt_logits"] - first["q_continue_logits"]).median()
        fixed.load_state_dict(adaptive.state_dict())
        per_segment = run_fixed()

        carry, calls = adaptive.initial_carry(b), 0
        while True:
            carry, out = adaptive(carry, b)
            calls += 1
            if carry.halted.all():
                break
    steps = out["actual_steps"].tolist()
    assert len(set(steps)) > 1 and calls == max(steps), steps
    for row, s in enumerate(steps):
        torch.testing.assert_close(out["logits"][row], per_segment[s - 1]["logits"][row])
        assert bool(per_segment[s - 1]["q_halt_logits"][row] > per_segment[s - 1]["q_continue_logits"][row]) or s == 4


def test_act_inference_changes_evaluation_segment_counts(sudoku4):
    """The evaluation on a baseline whose halt head says "stop now": every example runs
    halt_max_steps segments without act_inference, one with it."""
    from inference.evaluation import evaluate
    from training.build import create_dataloader
    from training.config import parse_config
    from training.state import init_train_state
    from utils.functions import unwrap_compiled
    steps = {}
    for act_inference in (False, True):
        with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
            cfg = compose("cfg_pretrain", overrides=[
                "arch=transformers_baseline", f"data_path={sudoku4}", "global_batch_size=16", "evaluators=[]",
                "arch.hidden_size=16", "arch.num_heads=2", "arch.H_layers=1", "arch.halt_max_steps=3",
                "arch.forward_dtype=float32", f"arch.act_inference={act_inference}", "compile=false"])
        config = parse_config(OmegaConf.to_container(cfg, resolve=True))
        _, train_metadata = create_dataloader(config, "train", test_set_mode=False, epochs_per_iter=1, global_batch_size=16,
                                              rank=0, world_size=1)
        eval_loader, eval_metadata = create_dataloader(config, "test", test_set_mode=True, epochs_per_iter=1,
                                                       global_batch_size=16, rank=0, world_size=1)
        torch.manual_seed(0)
        train_state = init_train_state(config, train_metadata, device="cpu")
        with torch.no_grad():
            unwrap_compiled(train_state.model).model.inner.q_head.bias.copy_(torch.tensor([5.0, -5.0]))
        train_state.model.eval()
        steps[act_inference] = evaluate(train_state.model, eval_loader, eval_metadata)["all"]["steps"]
    assert steps == {False: 3.0, True: 1.0}


RECURSIVE = {"hrm": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1", "trm": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
             "trm_hier6": HIER6, "trm_singlez": "recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1",
             "urm": "urm.urm@URM"}


@pytest.mark.parametrize("arch", sorted(RECURSIVE))
def test_at_depth_runs_every_recursive_model_at_that_depth_then_as_configured(arch):
    """Inside ``at_depth(H, L)`` a segment applies the blocks the model's own count gives for that
    depth; afterwards (also after an error) the configured depth again."""
    from models.layers import PostNormBlock
    model = load_model_class(RECURSIVE[arch], prefix="models.")(config(loops=4, num_layers=1)).eval()  # eval: no extra Q-target forward
    calls = []
    for module in model.modules():
        if isinstance(module, PostNormBlock):
            module.register_forward_hook(lambda *_: calls.append(1))
    b = batch()

    def segment_calls():
        calls.clear()
        model(carry=model.initial_carry(b), batch=b)
        return len(calls)

    with model.at_depth(1, 2):
        assert (model.config.H_cycles, model.config.L_cycles) == (1, 2)
        assert segment_calls() == model.inner.block_calls(model.config)[0]
    configured = model.inner.block_calls(model.config)[0]
    assert (model.config.H_cycles, model.config.L_cycles) == (2, 3) and segment_calls() == configured
    with pytest.raises(RuntimeError):
        with model.at_depth(1, 1):
            raise RuntimeError("a failing step")
    assert (model.inner.config.H_cycles, model.inner.config.L_cycles) == (2, 3)
