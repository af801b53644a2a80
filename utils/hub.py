"""Checkpoints on the Hugging Face Hub: ``hf://owner/name[@revision][/file]`` to a local file.

Downloads go through ``huggingface_hub`` into its usual cache, so ``HF_HOME`` / ``HF_HUB_CACHE``,
``HF_HUB_OFFLINE=1``, ``HF_TOKEN`` and ``hf auth login`` behave as with any other Hub library: a
repository fetched once answers offline afterwards. Only the weights file and the small files a
checkpoint needs beside it (run config, dataset metadata, metrics) are fetched, never both
copies of the weights.

Without a file in the URI the repository's weights file is found: ``model.safetensors`` (the
Hub's convention, written by ``scripts/push_to_hub.py``), else ``checkpoint`` (the original
releases), else its only ``step_N``. What a user can fix (offline without a cached copy, a
private or gated repository without a token, a missing repository, revision or file) is one
:class:`HubError` line. A revision is a branch, tag, commit or ``refs/pr/N``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence
from urllib.parse import quote, unquote

from utils.safe_io import CheckpointError

HF_SCHEME = "hf://"
SAFETENSORS_WEIGHTS = "model.safetensors"  # huggingface_hub's SAFETENSORS_SINGLE_FILE
RELEASE_WEIGHTS = "checkpoint"  # the original releases' weights file
_STEP_RE = re.compile(r"^step_\d+$")
# Files a checkpoint reads beside its weights (all small); fnmatch's "*" also crosses "/".
SIDE_FILES = ("all_config.yaml", "config.json", "eval_metrics.jsonl", "best.json", "dataset/*")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SPECIAL_REF_RE = re.compile(r"^(pr/\d+|convert/[\w.-]+)(?:/|$)")  # after "refs/": revisions holding slashes


class HubError(CheckpointError):
    """A Hub checkpoint that cannot be had; the message is one line for the user (a
    :class:`CheckpointError`, so every entry script reports it as such)."""


@dataclass(frozen=True)
class HubRef:
    """A parsed ``hf://`` URI: model repository, revision (None: the default branch), file (None: find it)."""

    repo_id: str
    revision: Optional[str] = None
    filename: Optional[str] = None

    @property
    def uri(self) -> str:
        special = self.revision and _SPECIAL_REF_RE.match(self.revision[len("refs/"):]) and self.revision.startswith("refs/")
        rev = f"@{self.revision if special else quote(self.revision, safe='')}" if self.revision else ""
        return f"{HF_SCHEME}{self.repo_id}{rev}" + (f"/{self.filename}" if self.filename else "")


def is_hub_uri(path: object) -> bool:
    """Whether ``path`` is an ``hf://`` URI rather than a local path."""
    return isinstance(path, str) and path.startswith(HF_SCHEME)


def _valid_revision(revision: str) -> bool:
    """A git reference name (``git check-ref-format``'s rules): no ``..``, no empty or dot-led
    component, no control characters or ``~^:?*[\\``; it never names a path outside the cache."""
    if ".." in revision or "@{" in revision or revision.endswith((".", "/", ".lock")) or revision.startswith("/"):
        return False
    if any(ord(c) < 0x20 or c in " ~^:?*[\\\x7f" for c in revision):
        return False
    return all(part and not part.startswith(".") for part in revision.split("/"))


def parse_hub_uri(uri: str, what: str = "checkpoint") -> HubRef:
    """``hf://owner/name[@revision][/file]`` -> :class:`HubRef`; a malformed URI is one :class:`HubError` line."""
    expected = "expected hf://owner/name[@revision][/file]"
    if not is_hub_uri(uri):
        raise HubError(f"{what}={uri}: {expected}")
    parts = uri[len(HF_SCHEME):].split("/", 2)
    if len(parts) < 2:
        raise HubError(f"{what}={uri}: {expected}")
    owner, name_rev, tail = parts[0], parts[1], parts[2] if len(parts) == 3 else ""
    if owner in ("datasets", "spaces", "buckets"):
        raise HubError(f"{what}={uri}: checkpoints are read from model repositories ({expected})")
    name, at, revision = name_rev.partition("@")
    if at and revision == "refs":  # refs/pr/N, refs/convert/<name>: the revision continues past a "/"
        m = _SPECIAL_REF_RE.match(tail)
        if not m:
            raise HubError(f"{what}={uri}: a revision starting with refs/ must be refs/pr/N or refs/convert/<name>")
        revision, tail = f"refs/{m.group(1)}", tail[m.end():]
    revision = unquote(revision)
    for part, label in ((owner, "owner"), (name, "repository name")):
        if not _NAME_RE.match(part) or ".." in part or "--" in part or part.endswith((".", "-")):
            raise HubError(f"{what}={uri}: {label} {part!r} is not a valid Hub name ({expected})")
    if at and not revision:
        raise HubError(f"{what}={uri}: empty revision after '@' ({expected})")
    if at and not _valid_revision(revision):
        raise HubError(f"{what}={uri}: revision {revision!r} is not a branch, tag or commit name ({expected})")
    filename = tail.strip("/")
    if any(p in ("", ".", "..") for p in filename.split("/")) and filename:
        raise HubError(f"{what}={uri}: file {filename!r} is not a path inside the repository")
    return HubRef(f"{owner}/{name}", revision or None, filename or None)


def pick_weights_file(files: Sequence[str], uri: str, what: str = "checkpoint") -> str:
    """The weights file among a repository's ``files`` (paths relative to its root)."""
    top = [f for f in files if "/" not in f]
    for name in (SAFETENSORS_WEIGHTS, RELEASE_WEIGHTS):
        if name in top:
            return name
    steps = sorted((f for f in top if _STEP_RE.match(f)), key=lambda f: int(f.split("_")[1]))
    if len(steps) == 1:
        return steps[0]
    if steps:
        raise HubError(f"{what}={uri}: the repository holds {len(steps)} weights files ({', '.join(steps[:6])}"
                       f"{', ...' if len(steps) > 6 else ''}); name one, e.g. {uri.rstrip('/')}/{steps[-1]}")
    shown = ", ".join(sorted(top)[:8]) or "no files"
    raise HubError(f"{what}={uri}: no weights file ({SAFETENSORS_WEIGHTS}, {RELEASE_WEIGHTS} or step_N) at the top of "
                   f"the repository (it holds {shown}); name the file: {uri.rstrip('/')}/<file>")


def local_checkpoint(path: str, what: str = "checkpoint") -> str:
    """``path`` itself, or for an ``hf://`` URI the local file it resolves to (:func:`resolve_checkpoint`)."""
    return resolve_checkpoint(path, what) if is_hub_uri(path) else path


def output_folder(uri: str) -> str:
    """Default folder for what is written about a Hub checkpoint (never its cache): ``hf_outputs/<owner>--<name>``."""
    ref = parse_hub_uri(uri)
    return os.path.join("hf_outputs", ref.repo_id.replace("/", "--") + (f"@{quote(ref.revision, safe='')}" if ref.revision else ""))


def resolve_checkpoint(uri: str, what: str = "checkpoint") -> str:
    """Local path of the weights file ``uri`` names, downloaded (with its side files) when not cached.

    The returned file lies in the cached snapshot folder of the repository, beside its
    ``all_config.yaml`` and dataset metadata, as in a run's checkpoint folder. When the Hub
    cannot be reached (or ``HF_HUB_OFFLINE=1``) the cached copy answers, as in huggingface_hub.
    """
    ref = parse_hub_uri(uri, what)
    hub = _import_hub(what, uri)
    from huggingface_hub import constants

    unreachable: Optional[BaseException] = None  # why the Hub was not asked (None: it answered)
    try:
        files = None
        if constants.HF_HUB_OFFLINE:
            unreachable = hub.errors.OfflineModeIsEnabled("HF_HUB_OFFLINE=1")
        else:
            try:
                info = hub.HfApi().model_info(ref.repo_id, revision=ref.revision)
                files = [s.rfilename for s in info.siblings or []]
            except Exception as e:  # noqa: BLE001 - only a lost connection falls through to the cache
                if not _is_unreachable(e):
                    raise
                unreachable = e
        local = unreachable is not None
        patterns = list(SIDE_FILES) + ([ref.filename] if ref.filename else [])
        # By the revision asked for (not the commit): the cache then records refs/<branch> -> commit, which
        # an offline run of the same URI looks up.
        folder = hub.snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=patterns, local_files_only=local)
        commit = os.path.basename(os.path.normpath(folder))  # a snapshot folder is named after its commit
        if files is None:
            files = sorted(os.path.relpath(os.path.join(d, f), folder).replace(os.sep, "/")
                           for d, _, names in os.walk(folder) for f in names)
        filename = ref.filename or pick_weights_file(files, uri, what)
        if filename not in files:
            raise _missing_file(ref, files, local, what)
        return hub.hf_hub_download(ref.repo_id, filename, revision=commit, local_files_only=local)
    except HubError:
        raise
    except Exception as e:  # noqa: BLE001 - mapped to one line below, or re-raised when unknown
        raise hub_error_line(e, ref, what, unreachable) from None


def _import_hub(what: str, uri: str):
    try:
        import huggingface_hub
        import huggingface_hub.errors  # noqa: F401 - hub.errors below
    except ImportError:
        raise HubError(f"{what}={uri}: reading hf:// checkpoints needs huggingface_hub>=0.25 (pip install -U huggingface_hub)") from None
    return huggingface_hub


def _is_unreachable(e: BaseException) -> bool:
    """A lost or refused connection, a timeout, or a Hub that is down (5xx): the cache may still answer."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(e, OfflineModeIsEnabled):
        return True
    if isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        return status is not None and status >= 500
    return isinstance(e, (ConnectionError, TimeoutError)) or type(e).__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3")


def _missing_file(ref: HubRef, files: Sequence[str], local: bool, what: str) -> HubError:
    where = "its cached copy" if local else "the repository"
    top = sorted(f for f in files if "/" not in f)
    hint = "; download it once with network" if local else ""
    return HubError(f"{what}={ref.uri}: {where} has no file {ref.filename!r} (it holds {', '.join(top[:8]) or 'nothing'}){hint}")


def hub_error_line(e: BaseException, ref: HubRef, what: str, unreachable: Optional[BaseException] = None) -> BaseException:
    """One :class:`HubError` line for what ``huggingface_hub`` raised (unknown errors come back unchanged).
    ``unreachable``: why the Hub was not asked, when it was not."""
    from huggingface_hub import constants, errors

    head = f"{what}={ref.uri}"
    login = "run `hf auth login` or set HF_TOKEN"
    if isinstance(e, errors.LocalEntryNotFoundError):  # also IncompleteSnapshotError (newer huggingface_hub)
        cache = constants.HF_HUB_CACHE
        if constants.HF_HUB_OFFLINE:
            return HubError(f"{head}: not in the local Hugging Face cache ({cache}) and HF_HUB_OFFLINE=1 forbids "
                            f"downloading it; fetch it once with network, or set HF_HOME to a cache that holds it")
        cause = unreachable or e.__cause__ or e.__context__
        reason = f" ({type(cause).__name__})" if cause is not None else ""
        return HubError(f"{head}: the Hub cannot be reached{reason} and the local Hugging Face cache ({cache}) "
                        "does not hold it; retry with network")
    if isinstance(e, errors.GatedRepoError):
        return HubError(f"{head}: {ref.repo_id} is gated: accept its conditions on https://huggingface.co/{ref.repo_id}, "
                        f"then {login} with that account")
    if isinstance(e, errors.RepositoryNotFoundError):
        if _token_is_set():
            return HubError(f"{head}: no model repository {ref.repo_id} on the Hub, or it is private and your token "
                            "has no access to it")
        return HubError(f"{head}: no model repository {ref.repo_id} on the Hub, or it is private and no token is set "
                        f"({login})")
    if isinstance(e, errors.RevisionNotFoundError):
        return HubError(f"{head}: {ref.repo_id} has no revision {ref.revision!r} (a branch, tag or commit)")
    if isinstance(e, errors.EntryNotFoundError):
        return HubError(f"{head}: {ref.repo_id} has no file {ref.filename!r}")
    if isinstance(e, errors.HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if status in (401, 403):
            return HubError(f"{head}: the Hub refused access ({status}); {login} with an account that can read it")
        return HubError(f"{head}: the Hub answered {status or 'an error'}: {first[:160]}")
    if _is_unreachable(e):
        return HubError(f"{head}: the Hub cannot be reached ({type(e).__name__}); retry with network")
    return e


def _token_is_set() -> bool:
    try:
        from huggingface_hub import get_token
        return get_token() is not None
    except ImportError:  # very old huggingface_hub
        return bool(os.environ.get("HF_TOKEN"))
