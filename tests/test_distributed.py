"""Several processes (gloo on CPU, real torchrun) train the same weights as one process with the
same global batch: gradients are summed, the sparse-embedding update all-gathers, metrics reduce."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, TINY_HRM, assert_same_training, free_port, load_weights, pretrain, subprocess_env, torchrun
from training.resume_state import complete_train_states, load_train_state


def args(data, ck):
    # No exploration: halting is then a deterministic function of the weights, identical on any split of the batch.
    # log_interval=5: the ranks read their training metrics back together, 5 steps at a time (as on CUDA).
    return [f"data_path={data}", "epochs=2", "eval_interval=1", "global_batch_size=8", "evaluators=[]", "lr=3e-3",
            "lr_warmup_steps=1", *TINY_HRM, "arch.halt_exploration_prob=0", "arch.H_cycles=2", "log_interval=5", f"checkpoint_path={ck}",
            "+run_name=d"]


def eval_metrics(ck):
    return [json.loads(line) for line in (ck / "eval_metrics.jsonl").read_text().splitlines()]


def test_commands_started_by_cpu_tests_see_no_gpu():
    """On a GPU machine, gloo ranks would pick cuda:<local rank> (cuda:1 does not exist on a 1-GPU
    machine): the CPU tests' commands run with CUDA_VISIBLE_DEVICES empty."""
    code = "import torch; print(torch.cuda.device_count())"
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0"


@pytest.fixture(scope="module")
def single(sudoku4, tmp_path_factory):
    ck = tmp_path_factory.mktemp("single") / "ck"
    pretrain(*args(sudoku4, ck))
    return ck


def assert_same_run(single_ck, ck):
    # lr 3e-3 (puzzle embedding 1e-2), 12 steps: a flipped sign is at most 2 x 12 x 1e-2 apart.
    assert_same_training(load_weights(single_ck / "step_12"), load_weights(ck / "step_12"), rtol=1e-5, step_bound=0.25)
    for a, b in zip(eval_metrics(single_ck), eval_metrics(ck)):
        assert a["step"] == b["step"]
        for k, v in a["all"].items():
            assert b["all"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


@pytest.fixture(scope="module")
def two_procs(sudoku4, tmp_path_factory):
    ck = tmp_path_factory.mktemp("two") / "ck"
    torchrun("--nproc-per-node", "2", str(REPO / "pretrain.py"), *args(sudoku4, ck))
    return ck


@pytest.mark.slow
def test_two_processes_match_one(single, two_procs):
    ck = two_procs
    assert_same_run(single, ck)
    assert (ck / "step_12.train_state.rank1.pt").exists()


@pytest.mark.slow
def test_two_nodes_on_localhost_match_one(single, sudoku4, tmp_path):
    ck = tmp_path / "ck"
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               f"--node-rank={node}", "--master-addr", "127.0.0.1", f"--master-port={port}",
                               str(REPO / "pretrain.py"), *args(sudoku4, ck)],
                              cwd=str(REPO), env=subprocess_env(OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for node in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert_same_run(single, ck)


# ---- preemption and stalled ranks under torchrun -------------------------------------------

def _start_torchrun(data, ck, *extra, env=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(REPO / "pretrain.py"), *args(data, ck), *extra]
    return subprocess.Popen(cmd, cwd=str(REPO), env=env or subprocess_env(OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, limit=180):
    deadline = time.time() + limit
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert path.exists(), f"{path} never appeared"


def _rank_pid(launcher_pid, rank):
    """The pid of torchrun's worker with RANK=rank."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if ppid == launcher_pid and f"RANK={rank}".encode() in env:
            return int(pid)
    raise AssertionError(f"no rank {rank} under pid {launcher_pid}")


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_at_one_step_and_resume_is_exact(two_procs, sudoku4, tmp_path):
    ck = tmp_path / "ck"
    proc = _start_torchrun(sudoku4, ck, "checkpoint_interval_steps=2")
    _wait_for(ck / "step_2.train_state.pt", proc)
    proc.send_signal(signal.SIGTERM)  # what SLURM / Kubernetes send to the launcher
    _, err = proc.communicate(timeout=120)
    stopped = complete_train_states(str(ck))[-1]
    assert 2 <= stopped < 12, err[-3000:]
    assert all((ck / f"step_{stopped}.train_state.rank{r}.pt").exists() for r in (0, 1))
    assert f"stopped by SIGTERM after step {stopped} of 12; resume state saved in {ck}" in err

    torchrun("--nproc-per-node", "2", str(REPO / "pretrain.py"), *args(sudoku4, ck), "checkpoint_interval_steps=2", f"resume={ck}/step_{stopped}")
    a, b = (torch.load(c / "step_12.train_state.pt", map_location="cpu", weights_only=True) for c in (two_procs, ck))
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for opt_a, opt_b in zip(a["optimizers"], b["optimizers"]):
        for pid, st in opt_a["state"].items():
            for name, t in st.items():
                assert torch.equal(t, opt_b["state"][pid][name]), f"optimizer state {pid}/{name} differs"


@pytest.mark.slow
def test_a_stopped_rank_ends_the_job_within_dist_timeout_naming_it(sudoku4, tmp_path):
    ck = tmp_path / "ck"
    proc = _start_torchrun(sudoku4, ck, "epochs=8", "checkpoint_interval_steps=2", "dist_timeout_s=20")
    _wait_for(ck / "step_2.train_state.pt", proc)
    rank1 = _rank_pid(proc.pid, 1)
    os.kill(rank1, signal.SIGSTOP)
    stopped_at = time.time()
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        try:
            os.kill(rank1, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert time.time() - stopped_at < 45
    assert proc.returncode != 0
    assert "error: rank 1 stopped answering for 20 s (dist_timeout_s) while training; ending the job" in err
    newest = complete_train_states(str(ck))[-1]
    shared, own = load_train_state(str(ck), newest, 0, map_location="cpu")
    assert shared["world_size"] == 2 and shared["step"] == newest >= 2
