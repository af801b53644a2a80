"""Stop signals (training/preemption.py): the first one becomes a request every rank agrees on, a
repeat within the grace period is the same request, a later second one exits at once."""
import os
import signal
import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env
from training import preemption


@pytest.mark.parametrize("sig", preemption.STOP_SIGNALS)
def test_first_signal_is_recorded_and_a_quick_repeat_is_the_same_request(sig):
    previous = signal.getsignal(sig)
    with preemption.StopRequest() as stop:
        assert stop.agreed() is None
        os.kill(os.getpid(), sig)
        os.kill(os.getpid(), sig)  # torchrun forwarding the terminal's signal once more
        assert stop.agreed() == sig
    assert signal.getsignal(sig) is previous


@pytest.mark.slow
def test_second_signal_after_the_grace_period_exits_at_once():
    code = ("import os, signal, time\n"
            "from training import preemption\n"
            "preemption.REPEAT_GRACE_S = 0\n"
            "preemption.StopRequest().install()\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(0.01)\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(30)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "received SIGTERM again: exiting now without saving" in proc.stderr


@pytest.mark.slow
def test_loader_worker_ignores_outside_stop_signals_but_exits_when_its_parent_ends_it():
    import multiprocessing
    import time
    ctx = multiprocessing.get_context("fork")
    worker = ctx.Process(target=_worker_body, daemon=True)
    worker.start()
    time.sleep(0.3)  # the worker has installed its handling
    for sig in preemption.STOP_SIGNALS:  # what a terminal's Ctrl-C or SLURM sends to every process
        subprocess.run(["kill", f"-{sig.name[3:]}", str(worker.pid)], check=True)
    time.sleep(0.3)
    assert worker.is_alive()
    worker.terminate()  # SIGTERM from the parent, as the DataLoader shuts its workers down
    worker.join(timeout=10)
    assert worker.exitcode == 0


def _worker_body():
    import time
    preemption.ignore_stop_signals()
    time.sleep(30)
