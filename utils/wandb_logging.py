"""Weights & Biases set-up that never blocks on a login prompt.

``WANDB_DISABLED=true`` turns logging off, ``WANDB_MODE`` is honoured as given; otherwise a run
logs online when credentials exist (``WANDB_API_KEY`` or a ``wandb login`` entry in ~/.netrc)
and falls back to offline mode, saying so, when they do not (``wandb sync`` uploads it later).
"""
from __future__ import annotations

import netrc
import os
from typing import Any, Dict, Optional, Tuple

_TRUE = {"1", "true", "yes", "on"}


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def choose_wandb_mode() -> Tuple[str, Optional[str]]:
    """``(mode, message)``: the W&B mode to use and, when it was a fallback, why."""
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in _TRUE:
        return "disabled", None
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode:
        if mode == "dryrun":
            mode = "offline"
        return mode, None
    if has_wandb_credentials():
        return "online", None
    return "offline", ("W&B: no credentials (WANDB_API_KEY or `wandb login`), logging offline under ./wandb; "
                       "`wandb sync` uploads it later, WANDB_MODE=disabled turns logging off")


class DisabledRun:
    """What :func:`init_wandb` returns with W&B off: the run methods training calls, doing nothing."""

    def log(self, data: Dict[str, Any], step: Optional[int] = None) -> None:
        pass

    def finish(self) -> None:
        pass


def init_wandb(project: str, name: str, config: Dict[str, Any], group: Optional[str] = None) -> Any:
    """Start a W&B run (possibly offline) and return it; ``group`` gathers a sweep's runs.

    With W&B off (``WANDB_MODE=disabled``, ``WANDB_DISABLED=true``) ``wandb`` is not imported at
    all, so a machine without the package trains (the GPU check's bundle leaves it out).
    """
    mode, message = choose_wandb_mode()
    if mode == "disabled":
        return DisabledRun()
    try:
        import wandb  # slow import; only on rank 0 of a training run with W&B on
    except ImportError:
        raise ImportError(f"W&B logging ({mode}) needs the wandb package: pip install wandb, or set WANDB_MODE=disabled") from None

    if message:
        print(message)
    return wandb.init(project=project, name=name, config=config, mode=mode, group=group,
                      settings=wandb.Settings(x_disable_stats=True, silent=mode != "online"))
