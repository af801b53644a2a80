"""The compile path without a GPU: every config/arch/*.yaml traces as one graph per mode, graphs
are built once (no recompilation across train/eval switches and EMA swaps), a compiled run equals
an eager one, ``compile=regional`` compiles the repeated modules in place, and
``compile=auto|true|false|regional`` decides as documented (utils/compile.py)."""
import glob
import os

import pytest
import torch
from omegaconf import OmegaConf

from conftest import assert_same_training, counting_backend
from models.ema import EMAHelper
from utils.sign_sgd import CastedSparseEmbeddingSignSGD_Distributed
from training.config import ConfigError, parse_config
from utils.adam_atan2 import AdamATan2
from utils.compile import (CPU_REGIONAL_BREAK_EVEN_STEPS, compile_regions, has_compiled_regions, has_cpp_compiler, should_compile,
                           should_compile_optimizer, should_compile_regions)
from utils.functions import load_model_class, unwrap_compiled

ARCH_DIR = os.path.join(os.path.dirname(__file__), "..", "config", "arch")
ARCHS = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ARCH_DIR, "*.yaml")))

# Tiny versions of every arch; only keys an arch yaml has are overridden (arch configs reject unknown keys).
TINY = dict(hidden_size=32, num_heads=2, H_layers=1, L_layers=1, num_layers=1, H_cycles=2, L_cycles=1, halt_max_steps=2, loops=2, puzzle_emb_len=1,
            expansion=2, halt_exploration_prob=0.5, forward_dtype="float32")
B, SEQ, VOCAB, PUZZLES = 4, 16, 6, 3


def build(arch, **overrides):
    """The tiny model of ``config/arch/<arch>.yaml`` in its loss head (with puzzle embeddings)."""
    cfg = OmegaConf.load(os.path.join(ARCH_DIR, f"{arch}.yaml"))
    tiny = {k: v for k, v in {**TINY, **overrides}.items() if k in cfg and not (k == "H_layers" and cfg[k] == 0)}
    cfg = OmegaConf.to_container(OmegaConf.merge(cfg, tiny), resolve=True)
    model_cfg = {k: v for k, v in cfg.items() if k not in ("name", "loss")}
    model_cfg.update(batch_size=B, seq_len=SEQ, vocab_size=VOCAB, num_puzzle_identifiers=PUZZLES, forward_dtype="float32")
    loss = dict(cfg["loss"])
    model = load_model_class(loss.pop("name"))(load_model_class(cfg["name"])(model_cfg), **loss)
    assert model.model.config.puzzle_emb_ndim > 0, "the tiny configs keep the puzzle embedding"
    return model


def make_batch(seed):
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randint(0, VOCAB, (B, SEQ), generator=g, dtype=torch.int32),
            "labels": torch.randint(0, VOCAB, (B, SEQ), generator=g, dtype=torch.int32),
            "puzzle_identifiers": torch.randint(0, PUZZLES, (B,), generator=g, dtype=torch.int32)}


def train_step(runner, model, carry, batch, optimizers):
    carry, loss, metrics, _, _ = runner(carry=carry, batch=batch, return_keys=[])
    (loss / B).backward()
    for opt in optimizers:
        opt.step()
        opt.zero_grad()
    return carry, loss.detach(), metrics


def eval_pass(runner, model, batch):
    with torch.inference_mode():
        carry = model.initial_carry(batch)
        for _ in range(model.model.config.halt_max_steps):
            carry, _, metrics, preds, _ = runner(carry=carry, batch=batch, return_keys=["preds", "q_halt_logits"])
    return metrics, preds


def optimizers_for(model):
    return [CastedSparseEmbeddingSignSGD_Distributed(model.model.puzzle_emb.buffers(), world_size=1, lr=1e-2, weight_decay=0.1),
            AdamATan2(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)]


@pytest.mark.parametrize("arch", ARCHS)
def test_arch_is_one_graph_per_mode_built_once(arch):
    """fullgraph=True (a graph break fails) and, after the first train and eval graphs, nothing
    recompiles over 3 train/eval switches with EMA swaps. Graph breaks and recompilations are
    decided by dynamo, before any backend, so the graphs run as captured (cheap on a CPU);
    inductor itself is exercised by the numeric test below."""
    torch.manual_seed(0)
    model = build(arch)
    counting, graphs = counting_backend()
    runner = torch.compile(model, backend=counting, fullgraph=True, dynamic=False)
    optimizers = optimizers_for(model)
    ema = EMAHelper(mu=0.9)
    ema.register(model)
    batch = make_batch(0)
    carry = model.initial_carry(batch)
    for switch in range(3):
        model.train()
        for _ in range(2):
            carry, loss, _ = train_step(runner, model, carry, batch, optimizers)
            ema.update(model)
        assert torch.isfinite(loss)
        model.eval()
        with ema.applied(model):
            eval_pass(runner, model, batch)
        assert len(graphs) == 2, f"{arch}: {len(graphs)} graphs after switch {switch + 1} (expected one train and one eval graph)"


@pytest.mark.parametrize("arch", ARCHS)
def test_regional_compile_builds_each_region_once_and_keeps_the_keys(arch):
    """compile=regional compiles the model's repeated modules in place: state-dict keys as eager,
    every graph built in the first train and eval steps, none after (mode switches, EMA swaps,
    the shallower steps of a depth curriculum: the regions do not read the depth)."""
    torch.manual_seed(0)
    model = build(arch)
    keys = list(model.state_dict())
    regions = model.model.inner.repeated_modules()
    names = sorted(n for n, m in model.model.inner.named_modules() if any(m is r for r in regions))
    expected = {"hrm": ["H_level", "L_level"], "hrm_v1": ["H_level", "L_level"], "transformers_baseline": ["H_level"],
                "urm": ["layers.0"]}.get(arch, ["L_level"])
    assert names == expected
    counting, graphs = counting_backend()
    compile_regions(regions, backend=counting, fullgraph=True)
    assert has_compiled_regions(model) and list(model.state_dict()) == keys
    optimizers = optimizers_for(model)
    ema = EMAHelper(mu=0.9)
    ema.register(model)
    batch = make_batch(0)
    carry = model.initial_carry(batch)
    seen = []
    for switch in range(3):
        model.train()
        for _ in range(2):
            depth = (1, 1) if switch == 1 and hasattr(model.model.config, "L_cycles") else None
            if depth:
                with model.model.at_depth(*depth):
                    carry, loss, _ = train_step(model, model, carry, batch, optimizers)
            else:
                carry, loss, _ = train_step(model, model, carry, batch, optimizers)
            ema.update(model)
        assert torch.isfinite(loss)
        model.eval()
        with ema.applied(model):
            eval_pass(model, model, batch)
        seen.append(len(graphs))
    assert 0 < seen[0] == seen[1] == seen[2], f"{arch}: graphs after each switch {seen}"


def test_regional_setting_compiles_in_place_unless_disabled(monkeypatch):
    from dataset.common import PuzzleDatasetMetadata
    from training.build import create_model
    raw = dict(arch={"name": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1", "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
                     **{k: v for k, v in TINY.items() if k not in ("loops", "num_layers", "H_layers")}, "puzzle_emb_ndim": 32, "pos_encodings": "rope",
                     "halt_exploration_prob": 0.1},
               global_batch_size=4, epochs=1, lr=1e-4, lr_min_ratio=1.0, lr_warmup_steps=1, weight_decay=0.1, beta1=0.9, beta2=0.95,
               puzzle_emb_lr=1e-2, puzzle_emb_weight_decay=0.1, compile="regional")
    meta = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=VOCAB, seq_len=SEQ, num_puzzle_identifiers=PUZZLES,
                                 total_groups=8, mean_puzzle_examples=1, sets=["all"])
    monkeypatch.delenv("DISABLE_COMPILE", raising=False)
    model = create_model(parse_config(raw), meta, world_size=1, device="cpu", total_steps=10)
    assert unwrap_compiled(model) is model, "the whole model is not wrapped"
    assert model.model.inner.L_level._compiled_call_impl is not None and has_compiled_regions(model)
    assert model.model.inner.lm_head._compiled_call_impl is None
    monkeypatch.setenv("DISABLE_COMPILE", "1")
    assert not has_compiled_regions(create_model(parse_config(raw), meta, world_size=1, device="cpu", total_steps=10))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["whole", "regional"])
def test_inductor_compiled_training_equals_eager(mode):
    """A few HRM training steps (ACT halting with exploration, puzzle embeddings and both
    optimizers) agree between eager and inductor-compiled (the whole model, or its reasoning
    modules) within 1e-5."""
    import torch._inductor.config as inductor_config

    def run(compiled):
        torch.manual_seed(0)
        model = build("hrm_v1", halt_max_steps=4, H_cycles=1)
        with torch.no_grad():  # a Q head that already halts some rows early
            model.model.inner.q_head.weight.normal_(0, 0.3)
            model.model.inner.q_head.bias.zero_()
        torch._dynamo.reset()
        runner = model
        if compiled and mode == "whole":
            runner = torch.compile(model, dynamic=False)
        elif compiled:
            compile_regions(model.model.inner.repeated_modules())
        optimizers = optimizers_for(model)
        batch = make_batch(1)
        carry, losses, halts = model.initial_carry(batch), [], []
        model.train()
        for _ in range(4):
            carry, loss, metrics = train_step(runner, model, carry, batch, optimizers)
            losses.append(loss)
            halts.append(carry.halted.clone())
        return losses, halts, {k: v.detach().clone() for k, v in model.state_dict().items()}

    with inductor_config.patch(fallback_random=True):  # the same random numbers as eager (ACT exploration)
        eager, compiled = run(False), run(True)
    for a, b in zip(eager[0], compiled[0]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(eager[1], compiled[1])), "halting decisions differ"
    assert any(h.any() and not h.all() for h in eager[1]), "the steps should include rows halting at different segments"
    # lr 3e-3 (puzzle embedding 1e-2), 4 steps: a flipped sign is at most 2 x 4 x 1e-2 apart.
    assert_same_training(eager[2], compiled[2], rtol=1e-5, step_bound=0.08)


def test_compile_setting_decides(monkeypatch):
    monkeypatch.delenv("DISABLE_COMPILE", raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert should_compile("auto", cuda, 10) and should_compile("auto", cuda, None)
    assert not should_compile("auto", cpu, 10 ** 6), "auto on a CPU: the regions, never the whole model"
    assert not should_compile_regions("auto", cpu, CPU_REGIONAL_BREAK_EVEN_STEPS - 1) and should_compile_regions("auto", cpu, CPU_REGIONAL_BREAK_EVEN_STEPS)
    monkeypatch.setenv("PATH", "")  # no C++ compiler to build CPU kernels with: auto trains eager rather than fail
    monkeypatch.delenv("CXX", raising=False)
    assert not has_cpp_compiler() and not should_compile_regions("auto", cpu, 10 ** 6) and should_compile_regions("regional", cpu, 10 ** 6)
    monkeypatch.undo()
    monkeypatch.delenv("DISABLE_COMPILE", raising=False)
    assert not should_compile_regions("auto", cpu, None), "evaluation only: auto does not compile on a CPU"
    assert not should_compile_regions("auto", cuda, 10 ** 6), "auto on CUDA: the whole model"
    assert should_compile(True, cpu, 1) and not should_compile(False, cuda, 10 ** 6)
    assert not should_compile("regional", cuda, 10 ** 6), "regional: not the whole model"
    assert should_compile_regions("regional", cuda, None) and not should_compile_regions(True, cpu, 10 ** 6)
    assert not should_compile_regions(False, cpu, 10 ** 6)
    assert not should_compile_optimizer(True, cpu, 10 ** 5, 100) and should_compile_optimizer(True, cpu, 27 * 10 ** 6, 1000)
    assert not should_compile_optimizer(True, cuda, 27 * 10 ** 6, 1000) and not should_compile_optimizer(False, cpu, 27 * 10 ** 6, 1000)
    monkeypatch.setenv("DISABLE_COMPILE", "1")
    assert not should_compile(True, cuda, 10 ** 6), "DISABLE_COMPILE (the original's switch) wins"
    assert not should_compile_regions("regional", cpu, 10 ** 6) and not should_compile_regions("auto", cpu, 10 ** 6)


def test_compile_config_key():
    raw = dict(arch={"name": "x", "loss": {"name": "y"}}, global_batch_size=8, epochs=1, lr=1e-4, lr_min_ratio=1.0, lr_warmup_steps=1,
               weight_decay=0.1, beta1=0.9, beta2=0.95, puzzle_emb_lr=1e-2, puzzle_emb_weight_decay=0.1)
    assert parse_config(raw).compile == "auto"
    assert parse_config({**raw, "compile": True}).compile is True
    assert parse_config({**raw, "compile": False}).compile is False
    assert parse_config({**raw, "compile": "regional"}).compile == "regional"
    with pytest.raises(ConfigError, match="compile"):
        parse_config({**raw, "compile": "sometimes"})
