"""Exact resume: a run killed (SIGKILL) mid-pass and resumed, or resumed from the state saved at
an evaluation, ends with the same weights, optimizer states, EMA and step as an uninterrupted run."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, TINY_HRM, load_weights, pretrain, run, subprocess_env, torchrun

FINAL = 24  # 48 groups x 4 epochs / batch 8


def args(data, ck, *extra):
    # Exploration on (random halting) and EMA on: the RNG and EMA state must be restored too.
    return [f"data_path={data}", "epochs=4", "eval_interval=2", "global_batch_size=8", "evaluators=[]", "lr=3e-3",
            "lr_warmup_steps=2", *TINY_HRM, "arch.halt_max_steps=3", "arch.halt_exploration_prob=0.5", "ema=True",
            "checkpoint_interval_steps=5", f"checkpoint_path={ck}", "+run_name=r", *extra]


def full_state(ck, step):
    return torch.load(ck / f"step_{step}.train_state.pt", map_location="cpu", weights_only=False)


def assert_identical(ck_a, ck_b, final=FINAL):
    assert load_weights(ck_a / f"step_{final}").keys() == load_weights(ck_b / f"step_{final}").keys()
    for k, v in load_weights(ck_a / f"step_{final}").items():
        assert torch.equal(v, load_weights(ck_b / f"step_{final}")[k]), f"EMA weights differ at {k}"
    a, b = full_state(ck_a, final), full_state(ck_b, final)
    assert a["step"] == b["step"] == final
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), f"weights differ at {k}"
    for opt_a, opt_b in zip(a["optimizers"], b["optimizers"]):
        assert opt_a["param_groups"] == opt_b["param_groups"], "optimizer settings or step counts differ"
        for pid, st in opt_a["state"].items():
            for name, t in st.items():
                assert torch.equal(t, opt_b["state"][pid][name]), f"optimizer state {pid}/{name} differs"
    for k, v in a["ema"].items():
        assert torch.equal(v, b["ema"][k])


@pytest.fixture(scope="module")
def uninterrupted(sudoku4, tmp_path_factory):
    ck = tmp_path_factory.mktemp("full") / "ck"
    pretrain(*args(sudoku4, ck))
    # Interval states are replaced by newer ones; the states saved at evaluations stay.
    assert sorted(f for f in os.listdir(ck) if f.endswith("train_state.pt")) == ["step_12.train_state.pt", "step_24.train_state.pt"]
    return ck


@pytest.mark.slow
def test_killed_mid_pass_then_resumed_equals_uninterrupted(uninterrupted, sudoku4, tmp_path):
    ck = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, str(REPO / "pretrain.py"), *args(sudoku4, ck)], cwd=str(REPO), env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (ck / "step_5.train_state.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    states = sorted(int(f.split("_")[1].split(".")[0]) for f in os.listdir(ck) if f.endswith("train_state.pt"))
    assert states and states[-1] % 12 != 0, f"expected a mid-pass state, found {states}"

    out = pretrain(*args(sudoku4, ck, f"resume={ck}")).stdout
    assert f"Resumed from {ck} at step {states[-1]}" in out
    assert_identical(uninterrupted, ck)


@pytest.mark.slow
def test_resume_from_evaluation_state_in_another_folder(uninterrupted, sudoku4, tmp_path):
    ck = tmp_path / "moved"
    ck.mkdir()
    for name in ("all_config.yaml", "step_12.train_state.pt", "step_12.train_state.rank0.pt"):
        shutil.copy(uninterrupted / name, ck / name)
    pretrain(*args(sudoku4, ck, f"resume={ck}/step_12"))
    assert_identical(uninterrupted, ck)


@pytest.mark.slow
def test_resume_refuses_a_changed_config(uninterrupted, sudoku4, tmp_path):
    proc = pretrain(*args(sudoku4, tmp_path / "x", f"resume={uninterrupted}", "lr=1e-3"), check=False)
    assert proc.returncode == 2
    assert "resume: config differs from the run being resumed (lr: 0.003 -> 0.001)" in proc.stderr


@pytest.mark.slow
def test_resume_refuses_another_number_of_processes(uninterrupted, sudoku4, tmp_path):
    proc = torchrun("--nproc-per-node", "2", str(REPO / "pretrain.py"), *args(sudoku4, uninterrupted, f"resume={uninterrupted}"), check=False)
    assert proc.returncode != 0
    assert "resume: the run used 1 process(es), this one has 2" in proc.stderr


@pytest.mark.slow
def test_resume_of_a_folder_without_state(sudoku4, tmp_path):
    proc = pretrain(*args(sudoku4, tmp_path / "x", f"resume={tmp_path}"), check=False)
    assert proc.returncode == 2 and "no step_N.train_state.pt in this folder" in proc.stderr


@pytest.mark.slow
def test_sigterm_saves_a_resume_state_and_resuming_equals_uninterrupted(uninterrupted, sudoku4, tmp_path):
    ck = tmp_path / "ck"
    proc = subprocess.Popen([sys.executable, str(REPO / "pretrain.py"), *args(sudoku4, ck)], cwd=str(REPO), env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (ck / "step_5.train_state.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    states = sorted(int(f.split("_")[1].split(".")[0]) for f in os.listdir(ck) if f.endswith("train_state.pt"))
    stopped = states[-1]
    assert 5 <= stopped < FINAL and (ck / f"step_{stopped}.train_state.rank0.pt").exists()
    assert f"stopped by SIGTERM after step {stopped} of {FINAL}; resume state saved in {ck}. To continue, run the same command " \
           f"with resume={ck}/step_{stopped}" in err
    assert "Traceback" not in err

    pretrain(*args(sudoku4, ck, f"resume={ck}/step_{stopped}"))
    assert_identical(uninterrupted, ck)
    # As after an uninterrupted run: only the states saved at evaluations remain.
    assert sorted(f for f in os.listdir(ck) if f.endswith("train_state.pt")) == ["step_12.train_state.pt", "step_24.train_state.pt"]


# The TRM paper's ablation models (the TRM repository's models/recursive_reasoning/): tiny sizes, 12 steps, killed after the state of step 5.
VARIANT_FINAL = 12
VARIANTS = {
    "trm_singlez": ["arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=2", "arch.puzzle_emb_len=1"],
    "trm_hier6": ["arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=3", "arch.puzzle_emb_len=1"],
    "transformers_baseline": ["arch.H_layers=2"],
    # URM (UbiquantAI/URM) with its Muon optimizer, an extra evaluation at loops + 2 segments and its training loop's timing and data order.
    "urm": ["arch.num_layers=1", "arch.H_cycles=2", "arch.L_cycles=2", "arch.loops=3", "optimizer=muon", "loop_deltas=[0,2]",
            "urm_train_loop=True"],
}


def variant_args(arch, data, ck, *extra):
    return [f"arch={arch}", f"data_path={data}", "epochs=2", "eval_interval=1", "global_batch_size=8", "evaluators=[]", "lr=3e-3",
            "lr_warmup_steps=2", "arch.hidden_size=16", "arch.num_heads=2", *VARIANTS[arch], "arch.halt_max_steps=3",
            "arch.halt_exploration_prob=0.5", "arch.forward_dtype=float32", "ema=True", "checkpoint_interval_steps=5",
            f"checkpoint_path={ck}", "+run_name=v", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_variant_killed_then_resumed_equals_uninterrupted(arch, sudoku4, tmp_path):
    full, ck = tmp_path / "full", tmp_path / "ck"
    # Both runs at once (one thread each): the uninterrupted one is only needed at the end.
    uninterrupted = subprocess.Popen([sys.executable, str(REPO / "pretrain.py"), *variant_args(arch, sudoku4, full)], cwd=str(REPO),
                                     env=subprocess_env(OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen([sys.executable, str(REPO / "pretrain.py"), *variant_args(arch, sudoku4, ck)], cwd=str(REPO),
                            env=subprocess_env(OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (ck / "step_5.train_state.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    states = sorted(int(f.split("_")[1].split(".")[0]) for f in os.listdir(ck) if f.endswith("train_state.pt"))
    assert states and states[-1] < VARIANT_FINAL, f"expected a state before the end, found {states}"

    out = pretrain(*variant_args(arch, sudoku4, ck, f"resume={ck}"), env=subprocess_env(OMP_NUM_THREADS="1")).stdout
    assert f"Resumed from {ck} at step {states[-1]}" in out
    _, err = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, err[-2000:]
    assert_identical(full, ck, final=VARIANT_FINAL)
    if arch == "urm":
        assert_urm_run(ck)


def assert_urm_run(ck):
    """loop_deltas=[0,2]: every evaluation also logged at loops + 2 = 5 segments (0 adds nothing);
    Muon's states are in the resume file; the checkpoint evaluates, its halt_max_steps list driving loops."""
    lines = [json.loads(line) for line in (ck / "eval_metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [6, 12]
    for line in lines:
        assert set(k for k in line if k.startswith("all")) == {"all", "all@loops+2"}
        assert line["all"]["steps"] == 3 and line["all@loops+2"]["steps"] == 5
    optimizers = full_state(ck, VARIANT_FINAL)["optimizers"]
    assert [g["use_muon"] for g in optimizers[1]["param_groups"]] == [True, False]
    assert {name for st in optimizers[1]["state"].values() for name in st} == {"muon_buffer", "adamw_exp_avg", "adamw_exp_avg_sq"}
    out = run([sys.executable, str(REPO / "evaluate.py"), f"checkpoint={ck}/step_{VARIANT_FINAL}", "halt_max_steps=[1,5]"],
              env=subprocess_env(OMP_NUM_THREADS="1")).stdout
    metrics = json.loads(out[out.index("\n{") + 1:])
    assert metrics["halt_max_steps=1"]["all"]["steps"] == 1 and metrics["halt_max_steps=5"]["all"]["steps"] == 5
    # At its trained loops + 2 the evaluation equals the one logged during training (EMA weights in both).
    assert metrics["halt_max_steps=5"]["all"]["lm_loss"] == pytest.approx(lines[-1]["all@loops+2"]["lm_loss"], rel=1e-6)
