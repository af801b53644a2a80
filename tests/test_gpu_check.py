"""scripts/gpu_check.py without a GPU: it never passes without checking (a GPU that torch cannot
use is one failing line), and its report is written step by step, each step timed out on its own."""
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO, subprocess_env
from scripts.gpu_check import DEFAULT_BUDGET_S, PLAN, Background, Report, StepTimeout, planned_timeline, print_dry_run, run


def _fake_nvidia_smi(folder, output, status=0):
    folder.mkdir(exist_ok=True)
    exe = folder / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\necho '{output}'\nexit {status}\n")
    exe.chmod(0o755)
    return subprocess_env(PATH=f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_a_gpu_that_torch_cannot_use_fails_in_one_line(tmp_path):
    env = _fake_nvidia_smi(tmp_path / "bin", "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0123)")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--out", str(tmp_path / "r.md")],
                          env=env, capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and not proc.stderr.strip(), proc.stdout + proc.stderr
    assert "nvidia-smi lists 1 GPU(s) (GPU 0: NVIDIA H100 80GB HBM3" in lines[0] and "install a CUDA build of torch" in lines[0]
    assert not (tmp_path / "r.md").exists()


def test_no_gpu_says_so_and_succeeds(tmp_path):
    env = _fake_nvidia_smi(tmp_path / "bin", "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver", status=9)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py")], env=env, capture_output=True, text=True,
                          cwd=str(tmp_path))
    assert proc.returncode == 0 and "nothing to check" in proc.stdout


def test_report_is_written_after_every_step_and_steps_time_out_alone(tmp_path):
    out = tmp_path / "report.md"
    report = Report(str(out), str(tmp_path / "report.md.log"), budget_s=60)
    assert report.step("quick", lambda limit: (True, "fine"), 30)
    assert "| PASS | quick |" in out.read_text() and "**ready**" in out.read_text()
    assert not report.step("hangs", lambda limit: (True, str(run(["sleep", "30"], report, timeout_s=0.5))), 30, min_s=0)
    text = out.read_text()
    assert "| FAIL | hangs |" in text and "timed out after" in text and "NOT ready" in text
    assert not report.step("raises", lambda limit: (1 / 0, ""), 30)
    assert "| FAIL | raises |" in out.read_text() and "ZeroDivisionError" in out.read_text()
    report.deadline = 0  # the budget is spent: later steps are skipped, not started
    assert not report.step("late", lambda limit: (True, "should not run"), 30)
    assert "| SKIP | late |" in out.read_text() and "should not run" not in out.read_text()
    assert "$ sleep 30" in (tmp_path / "report.md.log").read_text()


def test_background_command_is_joined_with_its_output_and_its_own_limit(tmp_path):
    report = Report(str(tmp_path / "r.md"), str(tmp_path / "r.md.log"), budget_s=60)
    done = Background(["sh", "-c", "echo started; echo oops >&2; exit 3"], report, str(tmp_path))
    proc = done.join(30)
    assert proc.returncode == 3 and proc.stdout == "started\n" and proc.stderr == "oops\n"
    hangs = Background(["sleep", "30"], report, str(tmp_path))
    with pytest.raises(StepTimeout):
        hangs.join(0.5)
    assert hangs.proc.returncode is not None


def test_a_timed_out_step_ends_children_in_sessions_of_their_own(tmp_path):
    """torchrun starts its workers with a session of their own: the timeout must end them too,
    or they keep running (and hold the output pipes) after the step gave up."""
    report = Report(str(tmp_path / "r.md"), str(tmp_path / "r.md.log"), budget_s=60)
    code = ("import subprocess, sys, time; child = subprocess.Popen(['sleep', '60'], start_new_session=True); "
            "print(child.pid, flush=True); time.sleep(60)")
    started = time.monotonic()
    with pytest.raises(StepTimeout):
        run([sys.executable, "-c", code], report, timeout_s=2)
    assert time.monotonic() - started < 20
    child = int(next(line for line in (tmp_path / "r.md.log").read_text().splitlines() if line.strip().isdigit()))
    time.sleep(0.2)
    assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split(")")[1].split()[0] == "Z"


def test_the_planned_timeline_fits_a_ten_minute_call(capsys):
    """Cold compiles of the Sudoku-size benchmarks take 100-180 s each on a GPU host: planned at 180
    s, side by side in the background, the whole check still ends within the default budget."""
    assert DEFAULT_BUDGET_S <= 560
    assert all(est >= 180 for name, est, _ in PLAN if name.startswith("compile cache"))
    for bundle in (False, True):
        assert print_dry_run(bundle, DEFAULT_BUDGET_S) == 0
        rows = planned_timeline(bundle)
        assert max(end for _, _, end in rows) <= DEFAULT_BUDGET_S
        # The compiled benchmarks start once their caches are warm, before the eager ones.
        starts = {name: start for name, start, _ in rows}
        cache_ready = max(end for name, _, end in rows if name.startswith("compile cache"))
        assert cache_ready <= starts["benchmark hrm_v1, compiled (Sudoku size)"] < starts["benchmark hrm_v1, eager (Sudoku size)"]
    assert "fits the budget of 540 s" in capsys.readouterr().out
    assert print_dry_run(False, 300) == 1 and "does NOT fit" in capsys.readouterr().out


@pytest.mark.slow
def test_a_broken_restore_fails_the_resume_step(tmp_path):
    """On a CPU the check's training runs are bit-exact: two uninterrupted runs agree exactly, so a
    resumed run whose carry was restored wrongly (halting flags flipped) must be reported as FAIL."""
    out = tmp_path / "r.md"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--only", "resume", "--break-resume", "--out", str(out),
                           "--budget-s", "3000"], env=subprocess_env(), capture_output=True, text=True, cwd=str(tmp_path), timeout=1200)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {line.split("|")[2].strip(): line for line in out.read_text().splitlines() if line.startswith("| PASS") or line.startswith("| FAIL")}
    assert rows["dataset (9x9 Sudoku, generated)"].startswith("| PASS")
    resume = rows["pretrain.py: SIGTERM, then resume= (and a broken-restore control)"]
    assert resume.startswith("| FAIL") and "differs from the uninterrupted one more than noise explains" in resume
    assert "two uninterrupted runs' 0.00e+00, 0.00e+00" in resume  # CPU runs: no noise, so the bound is the floor
