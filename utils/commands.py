"""Running the project's own command lines from a benchmark script (``scripts/speedrun.py``,
``scripts/arc_benchmark.py``): each step is a real process whose wall time is the measurement."""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from utils.cli import wants_help
from utils.config import user_error_message
from utils.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_command(cmd: List[str], env: Dict[str, str], what: str, capture: bool = False, prefix: str = "benchmark") -> Tuple[float, str]:
    """Run ``cmd`` in the repository (output shown as it comes, and kept when ``capture``); its
    wall time in seconds. A failed step ends the script with ``<prefix>: <what> failed``."""
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE if capture else None, text=True)
    lines = []
    if capture:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
    status = proc.wait()
    seconds = time.monotonic() - started
    if status != 0:
        sys.exit(f"{prefix}: {what} failed with exit status {status}")
    return seconds, "".join(lines)


def claim_folder(folder: str, option: str, why: str) -> None:
    """Create ``folder``, which must not exist: of two runs started together with one folder, only
    the one that made it goes on, and everything inside it is that run's own."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(folder)), exist_ok=True)
        os.mkdir(folder)
    except FileExistsError:
        raise UserError(f"{option}={folder} already exists; give a new folder ({why})") from None
    except OSError as e:
        raise UserError(f"{option}={folder}: cannot create the folder ({e.strerror})") from None


def run_in_new_folder(argv: Optional[Sequence[str]], doc: Optional[str], prepare: Callable[[List[str]], Tuple[Any, str]],
                      run: Callable[[Any], Any], why: str) -> Any:
    """A benchmark script's ``main``: ``--help`` prints ``doc``; ``prepare(argv)`` checks the options
    and returns ``(what run needs, the run folder)``; the folder (option ``out=``) is claimed (see
    :func:`claim_folder`), a user mistake up to there is one ``error:`` line with exit status 2 and
    nothing made; then ``run`` fills the folder, which is removed again if a step failed before
    anything was written into it. Returns what ``run`` returns (None for ``--help``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if wants_help(args):
        print(doc)
        return None
    try:
        prepared, folder = prepare(args)
        claim_folder(folder, "out", why)
    except UserError as e:
        print(f"error: {user_error_message(e)}", file=sys.stderr)
        sys.exit(2)
    try:
        return run(prepared)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only when empty


def last_step(folder: str) -> int:
    """The largest N of the ``step_N`` checkpoints in ``folder``."""
    steps = [int(f[5:]) for f in os.listdir(folder) if f.startswith("step_") and f[5:].isdigit()]
    if not steps:
        sys.exit(f"no step_N checkpoint in {folder}")
    return max(steps)


def final_metrics(evaluate_output: str) -> Dict[str, Any]:
    """The metrics JSON that ``evaluate.py`` prints last."""
    start = evaluate_output.rfind("\n{\n")
    try:
        return json.loads(evaluate_output[start + 1:] if start >= 0 else evaluate_output)
    except ValueError:
        sys.exit("could not read evaluate.py's metrics from its output")
