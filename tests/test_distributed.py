"""Several processes (gloo on CPU, real torchrun) train the same weights as one process with the
same global batch: gradients are summed, the sparse-embedding update all-gathers, metrics reduce."""
import json
import subprocess
import sys

import pytest

from conftest import REPO, TINY_HRM, free_port, load_weights, max_rel_diff, pretrain, subprocess_env, torchrun


def args(data, ck):
    # No exploration: halting is then a deterministic function of the weights, identical on any split of the batch.
    return [f"data_path={data}", "epochs=2", "eval_interval=1", "global_batch_size=8", "evaluators=[]", "lr=3e-3",
            "lr_warmup_steps=1", *TINY_HRM, "arch.halt_exploration_prob=0", "arch.H_cycles=2", f"checkpoint_path={ck}", "+run_name=d"]


def eval_metrics(ck):
    return [json.loads(line) for line in (ck / "eval_metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single(sudoku4, tmp_path_factory):
    ck = tmp_path_factory.mktemp("single") / "ck"
    pretrain(*args(sudoku4, ck))
    return ck


def assert_same_run(single_ck, ck):
    assert max_rel_diff(load_weights(single_ck / "step_12"), load_weights(ck / "step_12")) < 1e-5
    for a, b in zip(eval_metrics(single_ck), eval_metrics(ck)):
        assert a["step"] == b["step"]
        for k, v in a["all"].items():
            assert b["all"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


@pytest.mark.slow
def test_two_processes_match_one(single, sudoku4, tmp_path):
    ck = tmp_path / "ck"
    torchrun("--nproc-per-node", "2", str(REPO / "pretrain.py"), *args(sudoku4, ck))
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
