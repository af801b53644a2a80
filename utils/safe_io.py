"""Crash-safe file writes and loading that never runs code.

Every file is written under a temporary name in the same folder and renamed into place, so a
crash while saving never leaves a truncated file: readers see the old file or the new one. Files
get the user's umask.

Reading never runs code: every file is loaded with ``weights_only=True`` (checkpoints hold only
tensors, numbers, strings, lists and dicts) or as safetensors, and a file that is not a
checkpoint, a truncated one, or a full disk while writing is one :class:`CheckpointError` line.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import zipfile
from typing import Any, Dict, Optional

import torch

from utils.errors import UserError


class CheckpointError(UserError):
    """A checkpoint file that cannot be written or read; the message is one line for the user."""


def is_disk_full(e: BaseException, folder: str, needed: int) -> bool:
    """Whether the failed write ``e`` into ``folder`` ran out of space (``needed`` bytes: about what it wrote)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch.save reports a failed write as a RuntimeError from its C++ writer (no errno).
    try:
        return isinstance(e, (OSError, RuntimeError)) and shutil.disk_usage(folder).free < max(needed, 1 << 20)
    except OSError:
        return False


def atomic_write(path: str, write_fn, size_hint: int = 0) -> None:
    """Call ``write_fn(tmp_path)``, then rename ``tmp_path`` to ``path``.

    The temporary file is created with the user's umask (mkstemp would make it 0600, unreadable
    to collaborators). A full disk becomes one :class:`CheckpointError` line; the old ``path``,
    if any, is untouched and the temporary is removed.

    Only a regular file or a new path is replaced by a rename: a symbolic link is written through
    (the link stays), a device or pipe (``/dev/null``) is written in place, and a folder raises
    ``IsADirectoryError``.
    """
    if os.path.islink(path):
        path = os.path.realpath(path)
    if os.path.exists(path) and not os.path.isfile(path):
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "is a folder", path)
        write_fn(path)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    while True:
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if is_disk_full(e, folder, size_hint):
            # The traceback holds the failed writer's open file: drop it so the space is freed now.
            e.__traceback__ = None
            del e
            raise CheckpointError(f"no space left on device (needed about {max(size_hint, 1 << 20) / 1e6:.0f} MB in {folder})") from None
        raise


def _nbytes(obj: Any) -> int:
    """Bytes of the tensors in a nested object (the size of its ``torch.save`` file, roughly)."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def atomic_torch_save(obj: Any, path: str) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:  # our own handle: closed (space freed) even when the write fails
            torch.save(obj, f)
    atomic_write(path, write, size_hint=_nbytes(obj) + (64 << 10))


def safe_load(path: str, what: str, map_location="cpu", mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` (a pickle can only rebuild tensors and plain
    containers, never run code); any failure is one :class:`CheckpointError` naming ``what=path``."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{what}={path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - whatever a damaged or foreign file makes the unpickler raise
        text = str(e)
        if "Unsupported global" in text:
            raise CheckpointError(f"{what}={path}: refused to load: the file holds Python objects other than tensors and plain "
                                  "containers (not a checkpoint written by this project, or tampered with)") from None
        detail = re.sub(r"\s+", " ", text.split("WeightsUnpickler error:")[-1]).strip()[:120] or type(e).__name__
        if isinstance(e, EOFError) or "central directory" in text or _looks_truncated(path):
            raise CheckpointError(f"{what}={path}: the file is truncated ({detail})") from None
        raise CheckpointError(f"{what}={path}: not a checkpoint ({detail})") from None


def _looks_truncated(path: str) -> bool:
    """A zip file (torch.save's format) whose end record is missing: cut off while copying or writing."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        return head == b"PK\x03\x04" and not zipfile.is_zipfile(path)
    except OSError:
        return False


def _safetensors_header_length(path: str) -> Optional[int]:
    """The header length a safetensors file starts with (8 bytes, then the JSON header), or None for other files."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return None
    n = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    return n if head[8:9] == b"{" and 0 < n < (100 << 20) else None


def is_safetensors(path: str) -> bool:
    """Whether ``path`` is a safetensors file, whatever its name."""
    return _safetensors_header_length(path) is not None


def _load_safetensors(path: str, what: str, map_location) -> Dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"{what}={path}: a safetensors file; reading it needs the safetensors package (pip install safetensors)") from None
    try:
        return load_file(path, device=str(torch.device(map_location)))
    except Exception as e:  # noqa: BLE001 - whatever a damaged file makes the reader raise
        detail = re.sub(r"\s+", " ", str(e)).strip()[:120] or type(e).__name__
        truncated = (_safetensors_header_length(path) or 0) + 8 > os.path.getsize(path)
        problem = "the safetensors file is truncated" if truncated else "not a readable safetensors file"
        raise CheckpointError(f"{what}={path}: {problem} ({detail})") from None


def load_weights(path: str, what: str, map_location="cpu") -> Dict[str, torch.Tensor]:
    """A weights file (``step_N``, a release's ``checkpoint``, or ``model.safetensors``): a dict of
    tensors, or one :class:`CheckpointError` line."""
    if os.path.isfile(path) and is_safetensors(path):
        state_dict = _load_safetensors(path, what, map_location)
    else:
        state_dict = safe_load(path, what, map_location=map_location)
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state_dict.items()):
        raise CheckpointError(f"{what}={path}: not a model checkpoint (expected a dict of named tensors, got {type(state_dict).__name__})")
    # NaN or infinite weights answer garbage without any error further on.
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{what}={path}: {len(bad)} weight tensor(s) hold NaN or infinite values ({', '.join(sorted(bad)[:3])}"
                              f"{', ...' if len(bad) > 3 else ''}); the run diverged or the file is damaged")
    return state_dict


def atomic_write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, write, size_hint=len(text.encode()))
