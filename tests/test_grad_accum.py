"""Gradient accumulation (``gradient_accumulation_steps=K``) gives the K=1 run: weights, puzzle
embeddings, both optimizer states, EMA and logged train metrics, on 1 process (K=4) and on 2
processes under torchrun (K=2); a K>1 run killed mid-pass resumes bit for bit.

The data is a small ARC build (puzzle embeddings, 3-5 examples per puzzle, so a global batch
holds rows of the same puzzle in different micro-batches and ranks). For the equality tests
exploration is off, so halting is a function of the weights (the Q head, and halt_max_steps) and
identical at any K; with exploration on, K>1 trains alike and resumes exactly.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO, TINY_HRM, assert_same_training, max_rel_diff, pretrain, subprocess_env, torchrun
from inference.evaluation import evaluate
from training.config import ConfigError, check_batch_split, parse_config
from training.state import init_train_state, train_batch
from puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig

GLOBAL_BATCH = 4


@pytest.fixture(scope="module")
def arc_small(tmp_path_factory):
    """Six synthetic tasks, 3 augmentations: 6 train groups of 4 puzzles with 3-5 examples each."""
    root = tmp_path_factory.mktemp("arc_accum")
    rng = np.random.default_rng(1)

    def task(flip):
        def pair(h, w):
            x = rng.integers(0, 10, size=(h, w))
            return {"input": x.tolist(), "output": (np.fliplr(x) if flip else np.where(x == 0, 5, x)).tolist()}
        return {"train": [pair(3, 4), pair(4, 3), pair(2, 5)], "test": [pair(3, 3), pair(4, 4)]}

    subsets = {"training": {f"t{i}": task(i % 2) for i in range(4)}, "evaluation": {"e0": task(0), "e1": task(1)}}
    for subset, tasks in subsets.items():
        (root / f"arc-agi_{subset}_challenges.json").write_text(json.dumps(
            {n: {"train": t["train"], "test": [{"input": p["input"]} for p in t["test"]]} for n, t in tasks.items()}))
        (root / f"arc-agi_{subset}_solutions.json").write_text(json.dumps({n: [p["output"] for p in t["test"]] for n, t in tasks.items()}))
    from dataset.build_arc_dataset import ARCBuildConfig, build_arc_dataset
    build_arc_dataset(ARCBuildConfig(input_file_prefix=str(root / "arc-agi"), output_dir=str(root / "data"), num_aug=3))
    return root / "data"


def overrides(data, *extra):
    # One pass (eval at its end on a 6-example subset); halt_max_steps 2: rows halt and refill every other step.
    return [f"data_path={data}", "epochs=1", "eval_interval=1", f"global_batch_size={GLOBAL_BATCH}", "evaluators=[]",
            "lr=3e-3", "puzzle_emb_lr=1e-2", "lr_warmup_steps=1", *TINY_HRM, "arch.halt_exploration_prob=0", "ema=True",
            "eval_max_examples=6", "eval_global_batch_size=4", *extra]


def compose_config(items):
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        cfg = compose("cfg_pretrain", overrides=items)
    return parse_config(OmegaConf.to_container(cfg, resolve=True))


def train_in_process(data, k, *extra, float64=False):
    """The training loop's steps for one pass, in this process: (final train state, logged metrics per step).

    ``float64``: weights, optimizer states and the forward in float64 (the few float32 casts of the
    model, RMS norm and RoPE, stay), for comparisons that float32 rounding would blur.
    """
    config = compose_config(overrides(data, f"gradient_accumulation_steps={k}", *extra, *(["arch.forward_dtype=float64"] if float64 else [])))
    dataset = PuzzleDataset(PuzzleDatasetConfig(seed=config.seed, dataset_paths=config.data_paths, global_batch_size=GLOBAL_BATCH,
                                                test_set_mode=False, epochs_per_iter=1, rank=0, num_replicas=1), split="train")
    torch.manual_seed(config.seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if float64 else previous)
    try:
        state = init_train_state(config, dataset.metadata, world_size=1, device="cpu")
        state.model.train()
        logged = [train_batch(config, state, batch, gbs, rank=0, world_size=1) for _, batch, gbs in dataset]
    finally:
        torch.set_default_dtype(previous)
    return state, logged


def state_tensors(model_sd, optimizer_sds, ema_sd):
    """Every tensor of a training state, flat: weights (incl. the puzzle embedding), optimizer states, EMA."""
    out = {f"model/{k}": v for k, v in model_sd.items()}
    for i, sd in enumerate(optimizer_sds):
        for pid, st in sd["state"].items():
            out.update({f"opt{i}/{pid}/{name}": t for name, t in st.items() if torch.is_tensor(t) and t.ndim > 0})
    out.update({f"ema/{k}": v for k, v in ema_sd.items()})
    return out


def live_tensors(state):
    from utils.functions import strip_compile_prefix
    return state_tensors(strip_compile_prefix(state.model.state_dict()), [o.state_dict() for o in state.optimizers], state.ema.state_dict())


def saved_tensors(ck, step):
    saved = torch.load(ck / f"step_{step}.train_state.pt", map_location="cpu", weights_only=False)
    return state_tensors(saved["model"], saved["optimizers"], saved["ema"])


@pytest.fixture(scope="module")
def reference_k1(arc_small):
    return train_in_process(arc_small, 1)


def test_four_micro_batches_equal_one_batch(arc_small):
    """Compared in float64: in float32 the first AdamATan2 step moves a weight by ~lr whatever the
    size of its gradient, so a gradient within float32 rounding of zero, whose sign then depends on
    the summation order, would leave a weight ~2 lr away (float32 agreed to 6e-6 here, with no such
    element, against 1e-12 or so for float64: 1e-13 measured, any CPU or thread count)."""
    ref, ref_logged = train_in_process(arc_small, 1, float64=True)
    state, logged = train_in_process(arc_small, 4, float64=True)
    assert state.step == ref.step >= 5
    a, b = live_tensors(ref), live_tensors(state)
    assert any(k.startswith("opt1/") for k in a) and "model/model.inner.puzzle_emb.weights" in a
    assert max_rel_diff(a, b) < 1e-10
    # The puzzle embedding actually trained (SignSGD moved rows), so agreement is not trivial.
    assert a["model/model.inner.puzzle_emb.weights"].abs().sum() > 0
    # Sequences halted and were refilled: several distinct examples went through each slot.
    assert len(ref_logged) == len(logged) and all(m is not None for m in logged)
    for m_ref, m in zip(ref_logged, logged):
        assert m.keys() == m_ref.keys()
        for key, v in m_ref.items():
            assert m[key] == pytest.approx(v, rel=1e-10, abs=1e-12), key
    assert any(m["train/steps"] > 0 for m in logged), "no sequence halted"
    assert len(state.carry) == 4 and state.carry[0].halted.shape == (1,)


@pytest.mark.slow
def test_muon_with_two_micro_batches_equals_one_batch(arc_small):
    """optimizer=muon (URM's): the same K=1 equality; Muon's states take part.

    Compared in float64. In float32 the comparison measures rounding, not accumulation: Muon
    rounds its update to bfloat16 (relative step 2**-8), so a float32 difference in the summation
    order of K=1 and K=2 (~1e-7 relative) flips the rounding of a few elements per step, and the
    Newton-Schulz steps spread each flip over the matrix; the momentum buffers then differ by
    1e-4 to 1e-3 depending on the CPU's kernels and thread count, the weights by ~1e-2. In float64
    the gradients differ by ~1e-16 relative, which flips a bfloat16 rounding with probability
    ~1e-16 / 2**-8 per element and step (~1e-8 over this run's ~2e4 elements x 5 steps): every
    bfloat16 update is the same, and all tensors agree to ~3e-15 (measured). The bound 1e-10
    leaves 5 orders of margin for float64 noise and is far below a lost or double-counted
    micro-batch (order 1).
    """
    ref, _ = train_in_process(arc_small, 1, "optimizer=muon", float64=True)
    state, _ = train_in_process(arc_small, 2, "optimizer=muon", float64=True)
    a, b = live_tensors(ref), live_tensors(state)
    assert any("muon_buffer" in k for k in a) and any("adamw_exp_avg" in k for k in a)
    assert all(v.dtype == torch.float64 for k, v in a.items() if v.is_floating_point())
    assert state.step == ref.step >= 5 and all(a[k].abs().max() > 0 for k in a if "muon_buffer" in k)
    assert max_rel_diff(a, b) < 1e-10


def test_micro_batch_count_must_divide_the_batch():
    config = compose_config(["global_batch_size=8", "gradient_accumulation_steps=3"])
    with pytest.raises(ConfigError) as e:
        check_batch_split(config, world_size=1)
    assert "global_batch_size (8) is not divisible by processes (1) x gradient_accumulation_steps (3) = 3" in str(e.value)
    config = compose_config(["global_batch_size=8", "gradient_accumulation_steps=4"])
    check_batch_split(config, world_size=2)
    with pytest.raises(ConfigError, match=r"processes \(4\) x gradient_accumulation_steps \(4\) = 16"):
        check_batch_split(config, world_size=4)
    for bad, message in [("gradient_accumulation_steps=0", "gradient_accumulation_steps must be >= 1"),
                         ("eval_max_examples=0", "eval_max_examples must be a positive number"),
                         ("early_stop_patience=2", "early_stop_patience needs best_metric")]:
        with pytest.raises(ConfigError) as e:
            compose_config([bad])
        assert message in str(e.value) and "\n" not in str(e.value)


def test_with_exploration_micro_batches_train_like_one_batch(arc_small):
    """Exploration draws are made per micro-batch, so K>1 is not identical to K=1; it trains alike."""
    explore = ("arch.halt_max_steps=3", "arch.halt_exploration_prob=0.5")
    (_, one), (_, four) = train_in_process(arc_small, 1, *explore), train_in_process(arc_small, 4, *explore)
    loss_one, loss_four = [[m["train/lm_loss"] for m in logged] for logged in (one, four)]
    assert loss_four == pytest.approx(loss_one, rel=0.05)
    assert loss_four[-1] < loss_four[0] and loss_one[-1] < loss_one[0]


# Exploration on (halt_max_steps 3, so it changes when rows halt): the resume must restore the RNG and all carries.
EXPLORING_K2 = ("gradient_accumulation_steps=2", "arch.halt_max_steps=3", "arch.halt_exploration_prob=0.5", "checkpoint_interval_steps=2",
                "+run_name=k2")


@pytest.fixture(scope="module")
def one_process_k2(arc_small, tmp_path_factory):
    ck = tmp_path_factory.mktemp("k2") / "ck"
    pretrain(*overrides(arc_small, *EXPLORING_K2, f"checkpoint_path={ck}"))
    return ck


def final_step(ck):
    return max(int(f.split("_")[1].split(".")[0]) for f in os.listdir(ck) if f.endswith(".train_state.pt"))


@pytest.mark.slow
def test_two_processes_with_two_micro_batches_equal_one_batch(arc_small, reference_k1, tmp_path):
    ref, _ = reference_k1
    ck = tmp_path / "ck"
    torchrun("--nproc-per-node", "2", str(REPO / "pretrain.py"),
             *overrides(arc_small, "gradient_accumulation_steps=2", f"checkpoint_path={ck}", "+run_name=d2"))
    step = final_step(ck)
    assert step == ref.step
    # lr 3e-3 (puzzle embedding 1e-2), 5 steps: a flipped sign is at most 2 x 5 x 1e-2 apart.
    assert_same_training(live_tensors(ref), saved_tensors(ck, step), rtol=1e-5, step_bound=0.1)
    # Both processes saved their two carries.
    rank1 = torch.load(ck / f"step_{step}.train_state.rank1.pt", map_location="cpu", weights_only=False)
    assert isinstance(rank1["carry"], list) and len(rank1["carry"]) == 2
    # The evaluation subset (6 examples in batches of 4) is the same on 2 processes as on 1: the logged
    # metrics equal those of the K=1 weights evaluated here on one process.
    two = json.loads((ck / "eval_metrics.jsonl").read_text().splitlines()[-1])
    assert two["eval/seconds"] > 0
    config = compose_config(overrides(arc_small))
    subset = PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=config.data_paths, global_batch_size=4, test_set_mode=True,
                                               epochs_per_iter=1, rank=0, num_replicas=1, max_examples=6), split="test")
    ref.model.eval()
    with ref.ema.applied(ref.model):
        one = evaluate(ref.model, subset, subset.metadata)
    for key, v in one["all"].items():
        assert two["all"][key] == pytest.approx(v, rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_killed_mid_pass_with_micro_batches_resumes_bit_for_bit(arc_small, one_process_k2, tmp_path):
    ck = tmp_path / "ck"
    args = overrides(arc_small, *EXPLORING_K2, f"checkpoint_path={ck}")
    proc = subprocess.Popen([sys.executable, str(REPO / "pretrain.py"), *args], cwd=str(REPO), env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (ck / "step_2.train_state.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = final_step(ck)
    assert killed_at < final_step(one_process_k2), "expected a mid-pass state"
    saved = torch.load(ck / f"step_{killed_at}.train_state.rank0.pt", map_location="cpu", weights_only=False)
    assert len(saved["carry"]) == 2 and not saved["carry"][0]["halted"].all()  # mid-sequence carries were saved

    out = pretrain(*args, f"resume={ck}").stdout
    assert f"at step {killed_at}" in out
    step = final_step(one_process_k2)
    a, b = saved_tensors(one_process_k2, step), saved_tensors(ck, step)
    for k, v in a.items():
        assert torch.equal(v, b[k]), f"{k} differs after resume"
    for name in (f"step_{step}", "eval_metrics.jsonl"):
        assert (ck / name).exists()
