"""Wall-clock seconds since this process started, for budgets that count interpreter start-up,
imports and compilation (``max_train_seconds``, the speedrun's clock).

On Linux the kernel records when the process started (``/proc/self/stat``, in clock ticks since
boot, next to ``/proc/uptime``): exact to a tick (10 ms), whatever ran before the first line of
Python. Elsewhere the clock starts when this module is first imported, which the entry scripts do
early; that misses the interpreter's start-up (well under a second).
"""
from __future__ import annotations

import os
import time
from typing import Optional

_IMPORTED_AT = time.monotonic()  # the fallback's start, set once per process


def _linux_seconds_since_start() -> Optional[float]:
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        # Field 22 (starttime); the command name (field 2, in parentheses) may hold spaces.
        start_ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class ProcessClock:
    """Seconds since the process started, read without a system call after construction.

    ``from_now=True`` counts from construction instead: the second and later jobs of a Hydra
    multirun, which run one after another in one process, each count from their own start.
    ``origin`` names where the clock counts from, for messages."""

    def __init__(self, from_now: bool = False) -> None:
        since_start = 0.0 if from_now else _linux_seconds_since_start()
        if since_start is None:
            since_start = time.monotonic() - _IMPORTED_AT
        self._origin = time.monotonic() - since_start
        self.origin = "job start" if from_now else "process start"

    def elapsed(self) -> float:
        return time.monotonic() - self._origin
