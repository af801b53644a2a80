"""utils/runs.py: sweep jobs get their own folders and W&B group, and no run silently takes over
another run's checkpoint folder. The end-to-end test runs a real 2-job Hydra multirun, then
scripts/summarize_runs.py on its output (tests/test_summarize_runs.py reuses it)."""
import json
import os
import sys

import pytest

from conftest import REPO, TINY_HRM, load_weights, pretrain, run, subprocess_env
from utils.runs import SweepJob, apply_sweep_job, check_checkpoint_folder_free, swept_keys, sweep_group


def test_job_name_holds_the_swept_values_and_is_a_plain_override_value():
    job = SweepJob(num=3, overrides=("data_path=d/x", "lr=1e-3", "+arch.L_cycles=2", "checkpoint_path=ck"), sweep_name="s",
                   swept=("lr", "arch.L_cycles"))
    assert job.name == "job3_lr-1e-3_arch.L_cycles-2"
    assert SweepJob(num=0, overrides=("lr=1e-3", "run_name=r"), sweep_name="s").name == "job0_lr-1e-3"
    assert SweepJob(num=1, overrides=(), sweep_name="s").name == "job1"
    odd = SweepJob(num=2, overrides=('data_paths=[a/b, "c d"]',), sweep_name="s").name
    assert "/" not in odd and "=" not in odd and "," not in odd and " " not in odd


def test_swept_keys_from_a_command_line():
    assert swept_keys(["-m", "lr=1e-3,2e-3", "epochs=2", "+arch.L_cycles=range(1,3)", "data_paths=[a,b]"]) == ("lr", "arch.L_cycles")


def test_apply_sweep_job_and_group():
    job = SweepJob(num=1, overrides=("lr=2e-3",), sweep_name="sweep-2026_x", swept=("lr",))
    raw = {"checkpoint_path": "ck/sweep", "run_name": "r", "lr": 2e-3}
    assert apply_sweep_job(raw, job) == {"checkpoint_path": os.path.join("ck/sweep", "job1_lr-2e-3"), "run_name": "r_job1_lr-2e-3",
                                         "lr": 2e-3, "wandb_group": "r"}
    assert apply_sweep_job({**raw, "wandb_group": "mine"}, job)["wandb_group"] == "mine"
    assert raw["checkpoint_path"] == "ck/sweep"  # not modified in place
    assert sweep_group(raw, job) == "r" and sweep_group({"checkpoint_path": "ck/sweep/"}, job) == "sweep"
    assert sweep_group({}, job) == "sweep-2026_x"


def test_folder_guard(tmp_path):
    folder = tmp_path / "run"
    assert check_checkpoint_folder_free(str(folder), None) is None  # does not exist yet
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert check_checkpoint_folder_free(str(folder), None) is None  # nothing of a run in it
    (folder / "step_12").write_bytes(b"")
    message = check_checkpoint_folder_free(str(folder), None)
    assert "already holds another run's files (step_12)" in message and f"resume={folder}" in message
    assert check_checkpoint_folder_free(str(folder), str(folder)) is None
    assert check_checkpoint_folder_free(str(folder), str(folder / "step_12")) is None
    assert check_checkpoint_folder_free(str(folder), str(tmp_path / "other")) is not None


@pytest.fixture(scope="session")
def sweep(sudoku4, tmp_path_factory):
    """A real 2-job multirun (lr swept) with an explicit checkpoint_path."""
    work = tmp_path_factory.mktemp("sweep")
    pretrain("-m", f"data_path={sudoku4}", "lr=1e-3,1e-2", "epochs=2", "eval_interval=1", "global_batch_size=32",
             "evaluators=[]", "lr_warmup_steps=1", *TINY_HRM, "checkpoint_path=ck", "+run_name=sw", cwd=work)
    return work / "ck"


@pytest.mark.slow
def test_multirun_jobs_get_their_own_folders(sweep):
    assert sorted(os.listdir(sweep)) == ["job0_lr-0.001", "job1_lr-0.01"]
    last = json.loads((sweep / "job0_lr-0.001" / "eval_metrics.jsonl").read_text().splitlines()[-1])["step"]
    a, b = (load_weights(sweep / job / f"step_{last}") for job in sorted(os.listdir(sweep)))
    assert a.keys() == b.keys() and any((a[k] != b[k]).any() for k in a)
    configs = [(sweep / job / "all_config.yaml").read_text() for job in sorted(os.listdir(sweep))]
    assert "lr: 0.001" in configs[0] and "lr: 0.01" in configs[1] and "run_name: sw_job1_lr-0.01" in configs[1]
    assert all("wandb_group: sw\n" in c for c in configs)


@pytest.mark.slow
def test_a_plain_run_into_another_runs_folder_is_refused(sweep, sudoku4):
    target = sweep / "job0_lr-0.001"
    before = {n: (target / n).stat().st_mtime_ns for n in os.listdir(target)}
    proc = pretrain(f"data_path={sudoku4}", "epochs=1", "eval_interval=1", "global_batch_size=32", "evaluators=[]", *TINY_HRM,
                    f"checkpoint_path={target}", check=False)
    assert proc.returncode == 2 and "already holds another run's files" in proc.stderr and f"resume={target}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert {n: (target / n).stat().st_mtime_ns for n in os.listdir(target)} == before
