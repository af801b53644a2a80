"""Where a training run writes, so that no run overwrites another.

- Under Hydra multirun (``python pretrain.py -m lr=1e-3,2e-3 ...``) every job gets its own
  checkpoint folder (the given ``checkpoint_path`` plus ``job<N>_<key>-<value>`` of the swept keys) and every job's
  W&B run is put in one group named after the sweep.
- Any run, sweep or not, refuses a ``checkpoint_path`` that already holds another run's files
  unless ``resume=`` continues that run. A folder where a run stopped before saving anything
  (no weights, no resume state) is not another run's work: a new run starts over in it.
- One run at a time per folder: a run holds an exclusive lock on ``<checkpoint_path>/run.lock``
  for its lifetime (:class:`RunFolderLock`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import socket
import stat
import time
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

from utils.errors import UserError

# Overrides that name the run or its folder: leaving them out of a job's folder name keeps the
# name about what the sweep varies.
_NAMING_KEYS = {"checkpoint_path", "run_name", "project_name", "resume"}
_MAX_JOB_NAME = 120  # keep folder names well under filesystem limits (255 bytes)

# Files that show a folder belongs to a run (the names pretrain.py writes).
_RUN_FILE = re.compile(r"^(all_config\.yaml|(eval|train)_metrics\.jsonl|run_end\.json|step_\d+([._].*)?)$")
# Of those, the ones that hold a run's work: weights (``step_N``, ``best``) or a resume state.
_SAVED_FILE = re.compile(r"^(step_\d+|step_\d+\.train_state(\.rank\d+)?\.pt|best|best\.json)$")
LOCK_FILE = "run.lock"
RUN_END_FILE = "run_end.json"  # how a finished run ended (training/reporting.py), read by the run table


@dataclass(frozen=True)
class SweepJob:
    """One job of a Hydra multirun: its number, its own overrides, the keys the sweep varies, and
    the sweep's name."""
    num: int
    overrides: tuple
    sweep_name: str
    swept: tuple = ()

    @property
    def name(self) -> str:
        """``job<N>_<key>-<value>_...`` with the swept keys' values, usable as a folder name and in an override."""
        def key(o: str) -> str:
            return o.lstrip("+~").split("=", 1)[0]
        kept = [o.lstrip("+~") for o in self.overrides if key(o) not in _NAMING_KEYS and (not self.swept or key(o) in self.swept)]
        # '=' and ',' would need quoting in a later `resume=<folder>` override: key-value, joined by '_'
        text = "_".join(re.sub(r"[^A-Za-z0-9._-]+", "-", o.replace("=", "-", 1)).strip("-") for o in kept)
        name = f"job{self.num}" + (f"_{text}" if text else "")
        return name[:_MAX_JOB_NAME]


def swept_keys(args: Iterable[str]) -> tuple:
    """The keys a multirun command line sweeps (``lr=1e-3,2e-3``, ``seed=range(3)``, ...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    except Exception:  # Hydra reports bad overrides itself, before any job runs
        return ()
    return tuple(o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override())


def current_sweep_job(args: Iterable[str] = ()) -> Optional[SweepJob]:
    """The running Hydra multirun job, or None in a single run (or outside Hydra). ``args`` are the
    command line's arguments, to tell which keys the sweep varies."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        # Hydra's default sweep folder ends in <date>/<time>: both name the sweep
        parts = [p for p in str(hc.sweep.dir).split("/") if p not in ("", ".")][-2:]
        return SweepJob(num=int(hc.job.num), overrides=tuple(hc.overrides.task),
                        sweep_name="sweep-" + ("_".join(parts) or "0"), swept=swept_keys(args))
    except (ImportError, ValueError):
        return None


def apply_sweep_job(raw: Dict[str, Any], job: SweepJob) -> Dict[str, Any]:
    """The composed config of one sweep job with its own folder and run name.

    With ``checkpoint_path`` given, the job writes to ``<checkpoint_path>/job<N>_<key>-<value>...``; otherwise
    a given ``run_name`` gets the job name appended (the default folder follows the run name, and
    a default run name is random anyway). Every job's W&B run joins the group ``sweep_group`` names
    unless ``wandb_group`` is given."""
    raw = dict(raw)
    raw["wandb_group"] = raw.get("wandb_group") or sweep_group(raw, job)
    if raw.get("checkpoint_path"):
        raw["checkpoint_path"] = os.path.join(str(raw["checkpoint_path"]), job.name)
    if raw.get("run_name"):
        raw["run_name"] = f"{raw['run_name']}_{job.name}"
    return raw


def sweep_group(raw: Dict[str, Any], job: SweepJob) -> str:
    """The W&B group shared by every job of a sweep: the given run name or folder, else the sweep's."""
    for key in ("run_name", "checkpoint_path"):
        if raw.get(key):
            return os.path.basename(str(raw[key]).rstrip("/"))
    return job.sweep_name


def run_files(folder: str) -> Iterable[str]:
    """Names of the files in ``folder`` that a training run writes (none when it does not exist)."""
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if _RUN_FILE.match(n))


def saved_files(folder: str) -> List[str]:
    """Names in ``folder`` that hold a run's work: weights or a resume state."""
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if _SAVED_FILE.match(n))


def nothing_saved(folder: str) -> bool:
    """``folder`` is a run's folder (``all_config.yaml``) in which the run saved no weights and no
    resume state: it stopped before its first checkpoint, so there is nothing to continue."""
    return os.path.isfile(os.path.join(folder, "all_config.yaml")) and not saved_files(folder)


def check_checkpoint_folder_free(checkpoint_path: str, resume: Optional[str]) -> Optional[str]:
    """None when a run may write to ``checkpoint_path``; otherwise the one-line reason it may not.

    A folder holding another run's checkpoints is taken only by ``resume=`` of that folder (or
    of one of its ``step_N``), never silently overwritten. The files of a run that saved nothing
    do not count (:func:`start_over`)."""
    if os.path.exists(checkpoint_path) and not os.path.isdir(checkpoint_path):
        return None  # not ours to judge here: the path check elsewhere names it
    found = saved_files(checkpoint_path)
    if not found:
        return None
    if resume is not None:
        target = resume if os.path.isdir(resume) else os.path.dirname(resume)
        if os.path.realpath(target) == os.path.realpath(checkpoint_path):
            return None
    shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
    return (f"checkpoint_path={checkpoint_path} already holds another run's files ({shown}); "
            f"continue that run with resume={checkpoint_path}, or choose a new checkpoint_path")


def start_over(checkpoint_path: str) -> Optional[str]:
    """In a folder where a run stopped before saving anything, remove that run's files (its
    ``all_config.yaml``, ``eval_metrics.jsonl``, ``train_metrics.jsonl``, prediction files) so that a new run starts over
    in it instead of appending to them. Returns a notice naming them, or None when there were none.
    Call only when :func:`check_checkpoint_folder_free` allows the folder and nothing is resumed."""
    if saved_files(checkpoint_path):
        return None
    left = list(run_files(checkpoint_path))
    for name in left:
        os.remove(os.path.join(checkpoint_path, name))
    if not left:
        return None
    return (f"checkpoint_path={checkpoint_path}: a run stopped there before its first checkpoint; starting over "
            f"(removed its {', '.join(left[:4])}{' ...' if len(left) > 4 else ''})")


class RunFolderBusy(UserError):
    """Another process holds the lock of the run folder."""


class RunFolderLock:
    """An exclusive lock on ``<folder>/run.lock`` for as long as a run writes to ``folder``.

    The kernel drops the lock when the process ends, however it ends, so a killed run never leaves
    a stale lock (its ``run.lock`` may stay behind; an unlocked file means nothing). It is a POSIX
    record lock (``lockf``), not ``flock``: a process's own lock, which the DataLoader workers it
    forks do not share, so a worker outliving a killed run does not keep the folder locked (NFS
    supports it too). Another lock on the same file from the same process is not refused. The file holds
    the holder's PID and host for the message another run gets. A clean release deletes the file,
    and the folders :meth:`acquire` created when they are still empty (the run failed early)."""

    def __init__(self, folder: str, option: str = "checkpoint_path"):
        self.folder = folder
        self.option = option  # how the user named the folder, for the messages
        self.path = os.path.join(folder, LOCK_FILE)
        self._fd: Optional[int] = None
        self._created: Optional[str] = None  # the topmost folder acquire() created

    def acquire(self) -> Optional[str]:
        """Take the lock, creating the folder if needed. Raises :class:`RunFolderBusy` naming the
        holder when another process has it, ``ValueError`` when the folder cannot be made or its
        ``run.lock`` is not a plain file of this user's (a link, a FIFO, a folder: refused, never
        followed or truncated). Returns a warning when the filesystem cannot lock (the run then
        goes on unlocked)."""
        try:
            fd = self._lock()
        except BaseException:
            self._remove_created()  # refused: no folder of ours stays behind
            raise
        if fd is None:
            return (f"warning: {self.option}={self.folder}: this filesystem cannot lock files; "
                    "nothing stops a second run from writing to the same folder")
        self._fd = fd
        os.ftruncate(fd, 0)  # a plain file of ours, checked in _open: a killed run's stale lock
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        # A forked child (a DataLoader worker) would keep the file open after the run releases it
        # (a busy mount, a deleted file held): children close their copy. Their lock is not ours,
        # so closing it there leaves the run's lock in place.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _close_in_child(ref))
        return None

    def _lock(self) -> Optional[int]:
        """The locked descriptor of the lock file (None: the filesystem cannot lock)."""
        while True:
            self._make_folder()
            fd = self._open()
            if fd is None:
                continue  # a finishing run removed the folder or the file: start again
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EAGAIN):
                    os.close(fd)
                    if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                        return None
                    raise ValueError(f"{self.path}: cannot lock the run's lock file ({e.strerror})") from None
                holder = _read_holder(fd)
                os.close(fd)
                raise RunFolderBusy(f"{self.option}={self.folder} is in use by another run ({holder}); "
                                    f"wait for it to end or choose another {self.option}") from None
            # A run that just finished deletes its lock file: we must hold the file that is there now.
            if _same_file(self.path, fd):
                return fd
            os.close(fd)

    def _open(self) -> Optional[int]:
        """A descriptor of the lock file: a new one (``O_EXCL``), or the one a killed run left when
        it is a plain file of this user's with one name. Never follows a link (``O_NOFOLLOW``), so
        nothing outside the folder is created or written. None when the file or folder vanished
        meanwhile."""
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK  # O_NONBLOCK: a FIFO must not hang the open
        try:
            return os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass  # there already: a stale lock, a live run's, or something to refuse
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ValueError(f"{self.option}={self.folder}: cannot write there ({e.strerror})") from None
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ValueError(_not_a_lock_file(self.option, self.path, "a symbolic link")) from None
            if e.errno == errno.EISDIR:
                raise ValueError(_not_a_lock_file(self.option, self.path, "a folder")) from None
            if e.errno in (errno.ENXIO, errno.ENODEV, errno.ETXTBSY):
                raise ValueError(_not_a_lock_file(self.option, self.path, "a device or socket")) from None
            raise ValueError(f"{self.path}: cannot open the run's lock file ({e.strerror})") from None
        st = os.fstat(fd)
        what = None
        if not stat.S_ISREG(st.st_mode):
            what = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        elif st.st_nlink != 1:
            what = f"a file with {st.st_nlink} names (a hard link)"
        elif st.st_uid != os.geteuid():
            what = f"a file of another user (uid {st.st_uid})"
        if what is not None:
            os.close(fd)
            raise ValueError(_not_a_lock_file(self.option, self.path, what))
        return fd

    def _make_folder(self) -> None:
        top, parent = None, os.path.abspath(self.folder)
        while not os.path.exists(parent):
            top, parent = parent, os.path.dirname(parent)
        try:
            os.makedirs(self.folder, exist_ok=True)
        except FileExistsError:
            raise ValueError(f"{self.option}={self.folder}: a file is in the way; give a folder") from None
        except OSError as e:
            raise ValueError(f"{self.option}={self.folder}: cannot create the folder ({e.strerror})") from None
        if top is not None and self._created is None:
            self._created = top

    def release(self) -> None:
        """Drop the lock and delete the lock file (and the folders acquire() made, if still empty)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if _same_file(self.path, self._fd):  # only our own file, never what replaced it
                os.remove(self.path)  # while still locked, so that no one locks the file being deleted
        os.close(self._fd)
        self._fd = None
        self._remove_created()

    def _remove_created(self) -> None:
        """Remove the folders :meth:`_make_folder` created, while they are empty."""
        if self._created is None:
            return
        folder = os.path.abspath(self.folder)
        while True:
            try:
                os.rmdir(folder)
            except OSError:
                break
            if folder == self._created:
                break
            folder = os.path.dirname(folder)

    def __enter__(self) -> "RunFolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _close_in_child(ref: "weakref.ref[RunFolderLock]") -> None:
    lock = ref()
    if lock is not None and lock._fd is not None:
        with contextlib.suppress(OSError):
            os.close(lock._fd)
        lock._fd = None


def _same_file(path: str, fd: int) -> bool:
    """Whether ``path`` (not followed, if a link) names the open file ``fd``."""
    try:
        now, ours = os.lstat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino)


def _not_a_lock_file(option: str, path: str, what: str) -> str:
    return (f"{path}: the run's lock file is {what}, which no run makes; left untouched: "
            f"remove it or choose another {option}")


def _read_holder(fd: int) -> str:
    """``PID <n> on <host>`` from a lock file (the holder writes it right after locking)."""
    for _ in range(20):
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
        if len(text) >= 2:
            return f"PID {text[0]} on {text[1]}"
        time.sleep(0.05)
    return "PID unknown"


def claim_run_folder(checkpoint_path: str, resume: Optional[str]) -> Tuple[RunFolderLock, List[str]]:
    """Lock ``checkpoint_path`` for this run, then check it is free (another run's work is taken
    only by ``resume=`` of it) and start over in it when a stopped run saved nothing there.
    Returns the held lock (release it when the run ends) and the notices to print. Raises
    ``ValueError`` with one line, holding no lock, when the run may not write there."""
    lock = RunFolderLock(checkpoint_path)
    notices = [n for n in [lock.acquire()] if n]
    try:
        taken = check_checkpoint_folder_free(checkpoint_path, resume)
        if taken:
            raise ValueError(taken)
        if resume is None:
            notices += [n for n in [start_over(checkpoint_path)] if n]
    except BaseException:
        lock.release()
        raise
    return lock, notices
