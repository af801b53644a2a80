"""Stopping a training run cleanly when the cluster asks for it.

SLURM, Kubernetes and spot-instance reclaimers send SIGTERM (SLURM's ``--signal`` option sends
SIGUSR1 as an early warning); Ctrl-C sends SIGINT. :class:`StopRequest` turns the first of these
into a request: the training loop finishes its current step, every rank agrees on that step,
a resume state is saved and the run exits. A second signal exits at once without saving.

Under torchrun one signal often arrives twice within milliseconds (the terminal sends Ctrl-C to
every process, and torchrun forwards it again; SLURM signals every process and torchrun forwards
SIGTERM), so a repeat within :data:`REPEAT_GRACE_S` seconds counts as the same signal.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Dict, Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
REPEAT_GRACE_S = 2.0


def _say(text: str) -> None:
    # os.write, not print: a signal handler may interrupt a print that is under way.
    try:
        os.write(2, (text + "\n").encode())
    except OSError:
        pass


class StopRequest:
    """Records the first stop signal; :meth:`agreed` tells every rank whether to stop after this step."""

    def __init__(self, rank: int = 0):
        self.rank = rank
        self.signum: Optional[int] = None
        self._first_at = 0.0
        self._previous: Dict[int, object] = {}

    def install(self) -> "StopRequest":
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()

    def _handle(self, signum: int, _frame) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first_at = signum, now
            if self.rank == 0:
                _say(f"\nreceived {signal.Signals(signum).name}: finishing this step, then saving a resume state "
                     "(send the signal again to exit at once without saving)")
            return
        if now - self._first_at < REPEAT_GRACE_S:
            return  # the same request delivered twice (see module docstring)
        if self.rank == 0:
            _say(f"received {signal.Signals(signum).name} again: exiting now without saving")
        os._exit(128 + signum)

    def agreed(self, world_size: int = 1, group=None) -> Optional[int]:
        """The stop signal if any rank received one, else None; the same answer on every rank.

        Collective under torchrun: every rank calls it once per step (a one-number all-reduce on
        the CPU group, so it never waits for the GPU).
        """
        if world_size == 1:
            return self.signum
        import torch  # here, not at the top: DataLoader workers and the CLI import this module cheaply
        import torch.distributed as dist

        flag = torch.tensor([self.signum or 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        return int(flag.item()) or None


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """``worker_init_fn`` for DataLoader workers: the main process decides when to stop.

    A worker killed by the terminal's Ctrl-C or by SLURM's SIGTERM (sent to every process of a job)
    would take the loader down with it before the resume state is saved. SIGINT and SIGUSR1 are
    ignored; SIGTERM still ends the worker when it comes from its parent (the DataLoader shutting
    it down), which a plain handler cannot tell, hence a thread reading the sender with sigwaitinfo.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    parent = os.getppid()

    def exit_on_parents_sigterm() -> None:
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid == parent or os.getppid() != parent:
                os._exit(0)

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # inherited by the thread; only it receives SIGTERM
    threading.Thread(target=exit_on_parents_sigterm, name="sigterm-from-parent", daemon=True).start()


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class Preempted(Exception):
    """The run stopped on a signal after saving a resume state; ``exit_status`` is 128 + the signal."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status
