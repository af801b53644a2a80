"""Where a training run writes, so that no run overwrites another.

- Under Hydra multirun (``python pretrain.py -m lr=1e-3,2e-3 ...``) every job gets its own
  checkpoint folder (the given ``checkpoint_path`` plus ``job<N>_<key>-<value>`` of the swept keys) and every job's
  W&B run is put in one group named after the sweep.
- Any run, sweep or not, refuses a ``checkpoint_path`` that already holds another run's files
  unless ``resume=`` continues that run.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional

# Overrides that name the run or its folder: leaving them out of a job's folder name keeps the
# name about what the sweep varies.
_NAMING_KEYS = {"checkpoint_path", "run_name", "project_name", "resume"}
_MAX_JOB_NAME = 120  # keep folder names well under filesystem limits (255 bytes)

# Files that show a folder belongs to a run (the names pretrain.py writes).
_RUN_FILE = re.compile(r"^(all_config\.yaml|eval_metrics\.jsonl|step_\d+([._].*)?)$")


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


def check_checkpoint_folder_free(checkpoint_path: str, resume: Optional[str]) -> Optional[str]:
    """None when a run may write to ``checkpoint_path``; otherwise the one-line reason it may not.

    A folder holding another run's checkpoints is taken only by ``resume=`` of that folder (or
    of one of its ``step_N``), never silently overwritten."""
    if os.path.exists(checkpoint_path) and not os.path.isdir(checkpoint_path):
        return None  # not ours to judge here: the path check elsewhere names it
    found = list(run_files(checkpoint_path))
    if not found:
        return None
    if resume is not None:
        target = resume if os.path.isdir(resume) else os.path.dirname(resume)
        if os.path.realpath(target) == os.path.realpath(checkpoint_path):
            return None
    shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
    return (f"checkpoint_path={checkpoint_path} already holds another run's files ({shown}); "
            f"continue that run with resume={checkpoint_path}, or choose a new checkpoint_path")
