"""evaluate.py reproduces the metrics the training run logged, loads compiled-prefixed checkpoints,
runs longer at test time on request, and names the problem on bad input."""
import json
import sys

import pytest
import torch

from conftest import REPO, TINY_HRM, load_weights, pretrain, run, torchrun

EVAL = [sys.executable, str(REPO / "evaluate.py")]


@pytest.fixture
def trained(trained_hrm):
    return trained_hrm


def printed_metrics(stdout):
    return json.loads(stdout[stdout.index("{"):])["all"]


@pytest.mark.slow
def test_reproduces_logged_metrics_and_saves_outputs(trained):
    ck, logged = trained
    out = run([*EVAL, f"checkpoint={ck}/step_6"]).stdout
    assert printed_metrics(out) == pytest.approx(logged[6], rel=1e-6)
    preds = torch.load(ck / "step_6_all_preds.0", weights_only=True)
    assert set(preds) == {"inputs", "labels", "puzzle_identifiers", "logits", "q_halt_logits", "q_continue_logits"}
    assert preds["logits"].shape == (16, 16, 6)


@pytest.mark.slow
def test_two_processes_give_the_same_metrics(trained):
    ck, logged = trained
    out = torchrun("--nproc-per-node", "2", str(REPO / "evaluate.py"), f"checkpoint={ck}/step_12", "save_outputs=[preds]").stdout
    assert printed_metrics(out) == pytest.approx(logged[12], rel=1e-5)
    assert torch.load(ck / "step_12_all_preds.1", weights_only=True)["preds"].shape == (8, 16)


@pytest.mark.slow
def test_compiled_prefix_checkpoint_loads(trained, tmp_path):
    ck, logged = trained
    prefixed = {"_orig_mod." + k: v for k, v in load_weights(ck / "step_12").items()}
    (tmp_path / "all_config.yaml").write_text((ck / "all_config.yaml").read_text())
    torch.save(prefixed, tmp_path / "step_12")
    assert printed_metrics(run([*EVAL, f"checkpoint={tmp_path}/step_12"]).stdout) == pytest.approx(logged[12], rel=1e-6)


@pytest.mark.slow
def test_more_segments_at_test_time(trained):
    ck, _ = trained
    out = run([*EVAL, f"checkpoint={ck}/step_12", "halt_max_steps=5", "save_outputs=[]"]).stdout
    assert "halt_max_steps=5" in out and printed_metrics(out)["steps"] == 5.0


@pytest.mark.slow
def test_missing_config_and_misfit_checkpoint(trained, tmp_path):
    ck, _ = trained
    torch.save(load_weights(ck / "step_12"), tmp_path / "step_12")
    proc = run([*EVAL, f"checkpoint={tmp_path}/step_12"], check=False)
    assert proc.returncode == 2 and "no all_config.yaml next to it" in proc.stderr and "Traceback" not in proc.stderr

    (tmp_path / "all_config.yaml").write_text((ck / "all_config.yaml").read_text().replace("hidden_size: 32", "hidden_size: 64"))
    proc = run([*EVAL, f"checkpoint={tmp_path}/step_12"], check=False)
    assert proc.returncode == 2 and "does not fit the model" in proc.stderr and "model.inner.lm_head.weight (6, 32) vs model (6, 64)" in proc.stderr

    proc = run([*EVAL, f"checkpoint={tmp_path}/step_99"], check=False)
    assert proc.returncode == 2 and "step_99: no such file" in proc.stderr
