"""Progress bars that read well in a terminal and in a log file.

In a terminal :func:`progress_bar` is a plain ``tqdm`` bar. When the bar's stream is not a
terminal (output redirected to a file, a pipe, a cluster's log), tqdm's carriage returns and
cursor moves (``ESC[A`` for nested bars) would leave a smear of half-overwritten bars; there the
bar instead prints one plain line every ``PLAIN_INTERVAL_S`` seconds and a last line when it ends::

    train:  40%|####      | 250/625 [01:02<01:33,  4.01it/s]
"""
from __future__ import annotations

import re
import sys
import threading
from typing import Any, Iterable, Optional, TextIO

import tqdm

PLAIN_INTERVAL_S = 30.0  # seconds between two lines of a bar in a log
PLAIN_WIDTH = 100        # a log has no width: a fixed one keeps lines comparable
_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BAR = re.compile(r"\|[^|]*\|")


def is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed stream
        return False


def _counter(line: str) -> str:
    """A bar's line without its timing and drawing: ``train: 100%| 3/3`` of
    ``train: 100%|####| 3/3 [00:02<00:00, 1.49it/s, loss=1.0]``."""
    return _BAR.sub("|", line.split(" [", 1)[0])


class PlainLines:
    """A text stream for tqdm that turns each redraw into a line of its own: carriage returns and
    escape sequences removed, blank redraws (a bar clearing itself) and repeats dropped. A repeat
    is a line with the same count as the previous one: the redraw when a finished bar closes
    differs only in its timing, and would print the last line twice."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.last = ""
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            for piece in re.split(r"[\r\n]", _ESCAPE.sub("", text)):
                line = piece.rstrip()
                if line and _counter(line) != _counter(self.last):
                    self.stream.write(line + "\n")
                    self.last = line
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def progress_bar(iterable: Optional[Iterable] = None, **kwargs: Any) -> tqdm.tqdm:
    """``tqdm.tqdm(iterable, **kwargs)``; when its stream (``file``, default stderr) is not a
    terminal, plain lines every ``PLAIN_INTERVAL_S`` seconds instead of a redrawn bar.

    ``disable=None`` keeps tqdm's meaning (no bar at all outside a terminal)."""
    stream = kwargs.get("file") or sys.stderr
    if kwargs.get("disable", False) is None and not is_terminal(stream):
        kwargs["disable"] = True
    if not is_terminal(stream):
        interval = max(kwargs.get("mininterval", 0.1), PLAIN_INTERVAL_S)
        kwargs.update(file=PlainLines(stream), mininterval=interval, maxinterval=interval,
                      dynamic_ncols=False, ncols=PLAIN_WIDTH, ascii=True, leave=True)
    return tqdm.tqdm(iterable, **kwargs)
