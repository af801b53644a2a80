"""The ``key=value`` command line of the evaluation scripts (``evaluate.py``,
``scripts/analyze_checkpoint.py``): OmegaConf parsing into a pydantic config, and a user mistake
as one ``error:`` line with exit status 2."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional, Sequence, Tuple, Type

import pydantic

from utils.config import ConfigError, user_error_message
from utils.functions import validation_error_line


def run_config_cli(config_cls: Type[pydantic.BaseModel], run: Callable[[Any], Any], argv: Optional[Sequence[str]] = None,
                   user_errors: Tuple[Type[BaseException], ...] = (ConfigError,)) -> None:
    """Parse ``argv`` (default: the command line) into ``config_cls`` and call ``run`` with it.
    ``user_errors`` (and a config that does not validate) print one line (rank 0) and exit 2."""
    from omegaconf import OmegaConf

    try:
        raw = OmegaConf.to_container(OmegaConf.from_cli(list(sys.argv[1:] if argv is None else argv)), resolve=True)
        try:
            config = config_cls(**raw)  # type: ignore[arg-type]
        except pydantic.ValidationError as e:
            raise ConfigError(validation_error_line(e)) from None
        run(config)
    except (ConfigError, *user_errors) as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {user_error_message(e)}", file=sys.stderr)
        sys.exit(2)
