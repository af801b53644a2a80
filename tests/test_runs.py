"""training/runs.py: sweep jobs get their own folders and W&B group, and no run silently takes over
another run's checkpoint folder. The end-to-end test runs a real 2-job Hydra multirun, then
scripts/summarize_runs.py on its output (tests/test_summarize_runs.py reuses it)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, TINY_HRM, load_weights, pretrain, run, subprocess_env
from training.runs import (RunFolderBusy, RunFolderLock, SweepJob, apply_sweep_job, check_checkpoint_folder_free, claim_run_folder,
                        start_over, swept_keys, sweep_group)
from utils.dataset_metadata import metadata_files


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


def test_a_folder_where_a_run_saved_nothing_is_started_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("all_config.yaml", "eval_metrics.jsonl", "step_6_all_preds.0", "hrm_act_v1.py", "notes.txt"):
        (folder / name).write_text("x")
    assert check_checkpoint_folder_free(str(folder), None) is None
    notice = start_over(str(folder))
    assert "starting over" in notice and "all_config.yaml, eval_metrics.jsonl, step_6_all_preds.0" in notice
    assert sorted(os.listdir(folder)) == ["hrm_act_v1.py", "notes.txt"]  # code copies are rewritten; the user's file stays
    assert start_over(str(folder)) is None
    (folder / "eval_metrics.jsonl").write_text("x")
    (folder / "best").write_text("x")  # weights: another run's work, kept
    assert start_over(str(folder)) is None and "already holds another run's files (best)" in check_checkpoint_folder_free(str(folder), None)


HOLD = """
import os, sys, time
from training.runs import RunFolderLock
RunFolderLock(sys.argv[1]).acquire()
if sys.argv[2] == "fork-and-die" and os.fork() == 0:
    time.sleep(60)  # a DataLoader worker that outlives its run
    os._exit(0)
print("locked", flush=True)
if sys.argv[2] == "fork-and-die":
    os._exit(0)  # killed: no release, the lock file stays
time.sleep(60)
"""


def hold_lock(folder, how="hold"):
    """A process holding the lock of ``folder`` (one that forks a child and dies with ``fork-and-die``)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), how], stdout=subprocess.PIPE, text=True, env=subprocess_env())
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_run_folder_lock(tmp_path):
    folder = tmp_path / "a" / "b"
    lock = RunFolderLock(str(folder))
    assert lock.acquire() is None
    assert (folder / "run.lock").read_text().split()[0] == str(os.getpid())
    lock.release()
    assert not (tmp_path / "a").exists()  # the folders it made, still empty, go with the lock
    holder = hold_lock(folder)
    try:
        with pytest.raises(RunFolderBusy, match=rf"checkpoint_path={folder} is in use by another run \(PID {holder.pid} on "):
            RunFolderLock(str(folder)).acquire()
        with pytest.raises(RunFolderBusy):
            claim_run_folder(str(folder), None)
    finally:
        holder.kill()
        holder.wait()
    # Killed, it leaves its lock file but no lock, even while a child it forked lives on.
    dead = hold_lock(folder, "fork-and-die")
    dead.wait()
    assert (folder / "run.lock").read_text().split()[0] == str(dead.pid)
    with RunFolderLock(str(folder)) as again:
        assert again.acquire() is None
    assert os.listdir(folder) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="a file is in the way"):
        RunFolderLock(str(tmp_path / "file")).acquire()


def test_a_lock_path_that_is_not_a_plain_file_is_refused_untouched(tmp_path):
    """A link, a FIFO or a folder named run.lock is never followed, truncated or replaced: the
    lock is refused with one line naming the file, and nothing is created outside the folder."""
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's\n")
    made = {"symlink": lambda p: os.symlink(victim, p), "dangling": lambda p: os.symlink(tmp_path / "nowhere.txt", p),
            "hardlink": lambda p: os.link(victim, p), "fifo": os.mkfifo, "folder": os.mkdir}
    expected = {"symlink": "a symbolic link", "dangling": "a symbolic link", "hardlink": "a file with 2 names",
                "fifo": "a FIFO", "folder": "a folder"}
    for kind, make in made.items():
        folder = tmp_path / kind
        folder.mkdir()
        make(str(folder / "run.lock"))
        with pytest.raises(ValueError, match=f"^{folder / 'run.lock'}: the run's lock file is {expected[kind]}") as e:
            RunFolderLock(str(folder)).acquire()
        assert "\n" not in str(e.value)
        assert os.listdir(folder) == ["run.lock"]
    assert victim.read_text() == "the user's\n" and os.stat(victim).st_nlink == 2
    assert not (tmp_path / "nowhere.txt").exists()
    # A refused lock leaves no folder it made (here a lock path below a symlinked folder name).
    with pytest.raises(ValueError):
        RunFolderLock(str(tmp_path / "symlink" / "run.lock" / "deeper")).acquire()
    assert sorted(os.listdir(tmp_path / "symlink")) == ["run.lock"]


def _stderr_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.strip() and "\r" not in line and "it/s]" not in line]


@pytest.mark.slow
def test_one_run_per_folder_and_a_killed_run_leaves_no_lock(sudoku4, tmp_path):
    """A real run holds its folder: a second run into it stops before writing, naming the first's
    PID. Killed (SIGKILL) before its first save, the first leaves no lock and nothing to resume:
    the same command then starts over in the folder."""
    ck = tmp_path / "ck"
    args = [f"data_path={sudoku4}", "global_batch_size=8", "evaluators=[]", "lr_warmup_steps=1", *TINY_HRM, f"checkpoint_path={ck}"]
    first = subprocess.Popen([sys.executable, str(REPO / "pretrain.py"), *args, "epochs=100000", "eval_interval=100000"],
                             env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The folder is compared before and after the second run, so first wait until the first run has
        # written all it writes at its start: the config, then the datasets' metadata (dataset/).
        started = [ck / "run.lock", ck / "all_config.yaml", *(ck / rel for rel in metadata_files([str(sudoku4)]))]
        deadline = time.time() + 120
        while not all(path.exists() for path in started):
            assert first.poll() is None and time.time() < deadline, "the first run did not start"
            time.sleep(0.2)
        before = {n: (ck / n).stat().st_mtime_ns for n in os.listdir(ck)}
        second = pretrain(*args, "epochs=2", "eval_interval=1", check=False)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert _stderr_lines(second) == [f"error: checkpoint_path={ck} is in use by another run (PID {first.pid} on "
                                         f"{os.uname().nodename}); wait for it to end or choose another checkpoint_path"]
        assert {n: (ck / n).stat().st_mtime_ns for n in os.listdir(ck)} == before
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert "run.lock" in os.listdir(ck) and not any(n.startswith("step_") for n in os.listdir(ck))
    again = pretrain(*args, "epochs=2", "eval_interval=1")
    assert f"checkpoint_path={ck}: a run stopped there before its first checkpoint; starting over" in again.stdout
    assert (ck / "step_12").exists() and "run.lock" not in os.listdir(ck)
    assert "lr_warmup_steps: 1" in (ck / "all_config.yaml").read_text() and "epochs: 2\n" in (ck / "all_config.yaml").read_text()


@pytest.mark.slow
def test_resume_of_a_run_that_saved_nothing_starts_from_step_0(sudoku4, tmp_path):
    """A run that stops at its first evaluation (unknown best_metric) saves no weights; resume= of
    its folder starts from step 0 there with a notice, and the stopped run's metrics are not mixed in."""
    ck = tmp_path / "ck"
    args = [f"data_path={sudoku4}", "epochs=2", "eval_interval=1", "global_batch_size=8", "evaluators=[]", "lr_warmup_steps=1", *TINY_HRM]
    failed = pretrain(*args, f"checkpoint_path={ck}", "best_metric=all/nosuch", check=False)
    assert failed.returncode == 2 and (ck / "eval_metrics.jsonl").exists() and not (ck / "step_6").exists()
    resumed = pretrain(*args, f"resume={ck}")
    assert f"resume={ck}: that run stopped before saving any weights or resume state; starting from step 0" in resumed.stdout
    assert [json.loads(line)["step"] for line in (ck / "eval_metrics.jsonl").read_text().splitlines()] == [6, 12]
    assert (ck / "step_12").exists()


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
