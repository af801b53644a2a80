"""Configuration rules shared by training, evaluation and the loader: one place each."""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Union

from utils.errors import UserError


class ConfigError(UserError):
    """A user mistake in the configuration or command line; printed as one line."""


def normalize_data_paths(single: Optional[str], many: Union[None, str, Sequence[str]],
                         names: Sequence[str] = ("data_path", "data_paths")) -> List[str]:
    """One list of dataset folders from the HRM spelling (one folder) and the TRM spelling (a list).

    Either may be missing; given together they must agree. ``names`` name the two options in the error.
    """
    paths = [] if many is None else ([many] if isinstance(many, str) else list(many))
    if single is not None and paths and paths != [single]:
        raise ConfigError(f"{names[0]}={single} and {names[1]}={paths} disagree; give one of them")
    return paths or ([single] if single is not None else [])


def check_batch_divisible(global_batch_size: int, world_size: int) -> None:
    """Every process takes an equal slice of each global batch."""
    if global_batch_size % world_size:
        raise ConfigError(f"global_batch_size ({global_batch_size}) is not divisible by the number of processes ({world_size}): "
                         "it must be divisible by the number of ranks, each of which takes an equal slice of every batch")


def user_error_message(e: BaseException) -> str:
    """One line for the user. Errors raised in a DataLoader worker arrive wrapped in the worker's
    traceback text; keep only the original message (its last line)."""
    text = str(e).strip()
    if "Original Traceback" in text:
        text = re.sub(r"^[\w.]+: ", "", text.splitlines()[-1])
    return text


def read_run_yaml(path: str, hint: str = "") -> Dict[str, Any]:
    """A run's ``all_config.yaml`` as a dict; a file that cannot be read, is not YAML or is not a
    mapping (empty, a list) is one :class:`ConfigError` line naming it (``hint`` is appended)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        mark = getattr(e, "problem_mark", None)
        why = getattr(e, "strerror", None) or (f"invalid YAML at line {mark.line + 1}" if mark is not None else type(e).__name__)
        raise ConfigError(f"{path}: not readable as a run's config ({why}){hint}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a run's config (expected a mapping of config keys, got "
                          f"{'an empty file' if raw is None else type(raw).__name__}){hint}")
    return raw
