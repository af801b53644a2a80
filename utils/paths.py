"""Checks that an output location can be written, made before any work (loading a model, running
it), so that a bad ``output=`` / ``picture=`` / ``output_dir=`` / ``out=`` is one line and nothing
is written. Each check tries what the write will do (a temporary file created and removed in the
folder), as permission bits alone do not tell (``/proc`` as root, read-only mounts)."""
from __future__ import annotations

import errno
import os
import secrets
from typing import Dict, List, Tuple


def _nearest_existing(path: str) -> str:
    """``path`` or its nearest ancestor that exists."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def _probe(folder: str, option: str, given: str) -> None:
    """Create and remove a temporary file in ``folder``: raises ``ValueError`` when it cannot be done."""
    if not os.path.isdir(folder):
        raise ValueError(f"{option}={given}: {folder} is a file, not a folder")
    probe = os.path.join(folder, f".write-check.{secrets.token_hex(4)}.tmp")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as e:
        raise ValueError(f"{option}={given}: cannot write in {folder} ({e.strerror})") from None
    os.remove(probe)


def check_output_file(path: str, option: str) -> None:
    """Raise ``ValueError`` (one line naming ``option=path``) unless a file can be written at ``path``:
    a new file (missing folders above it are made when writing), a regular file to replace, or a
    device or pipe such as ``/dev/null`` (written in place, never replaced)."""
    real = os.path.realpath(path)
    if os.path.isdir(real):
        raise ValueError(f"{option}={path}: is a folder; give a file name")
    if os.path.exists(real) and not os.path.isfile(real):
        if not os.access(real, os.W_OK):
            raise ValueError(f"{option}={path}: not writable")
        return
    _probe(_nearest_existing(os.path.dirname(real)), option, path)


def check_output_folder(path: str, option: str) -> None:
    """Raise ``ValueError`` (one line naming ``option=path``) unless ``path`` is a folder files can
    be written in, or one that can be made."""
    real = os.path.realpath(path)
    if os.path.exists(real) and not os.path.isdir(real):
        raise ValueError(f"{option}={path}: a file is in the way; give a folder")
    _probe(_nearest_existing(real), option, path)


def make_folder(path: str) -> str:
    """``os.makedirs(path)``; returns the topmost folder it made ('' when ``path`` existed), for
    :func:`remove_if_empty` to undo when the command then fails."""
    top = ""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        top, probe = probe, os.path.dirname(probe)
    os.makedirs(path, exist_ok=True)
    return top


def remove_if_empty(path: str, top: str) -> None:
    """Remove the empty folders from ``path`` up to ``top`` (what :func:`make_folder` made); a
    folder holding anything stays."""
    if not top:
        return
    folder = os.path.abspath(path)
    while True:
        try:
            os.rmdir(folder)
        except OSError:
            return
        if folder == os.path.abspath(top):
            return
        folder = os.path.dirname(folder)


def write_together(contents: Dict[str, bytes]) -> None:
    """Write every file of ``contents`` (path -> bytes) or none of them: each regular or new file
    goes to a temporary name beside it first and the renames come last, so a failure leaves the
    old files (if any) as they were and no temporary behind. A symbolic link is written through;
    a device or pipe (``/dev/null``) is written in place, after the others, never replaced."""
    staged: List[Tuple[str, str]] = []  # (temporary, final path)
    in_place: List[Tuple[str, bytes]] = []
    made: List[Tuple[str, str]] = []
    try:
        for path, data in contents.items():
            real = os.path.realpath(path)
            if os.path.isdir(real):
                raise IsADirectoryError(errno.EISDIR, "is a folder", path)
            if os.path.exists(real) and not os.path.isfile(real):
                in_place.append((real, data))
                continue
            folder = os.path.dirname(real)
            made.append((folder, make_folder(folder)))
            tmp = os.path.join(folder, f".{os.path.basename(real)}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the user's umask, as any new file
            staged.append((tmp, real))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        for tmp, real in staged:
            os.replace(tmp, real)
        staged = []
        for real, data in in_place:
            with open(real, "wb") as f:
                f.write(data)
    finally:
        for tmp, _ in staged:  # a failure before the renames: nothing of this call stays
            if os.path.exists(tmp):
                os.remove(tmp)
        if staged:
            for folder, top in reversed(made):
                remove_if_empty(folder, top)
