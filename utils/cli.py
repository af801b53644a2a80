"""Command lines: the ``key=value`` one of the evaluation scripts (``evaluate.py``,
``scripts/analyze_checkpoint.py``, ``predict.py``): OmegaConf parsing into a pydantic config,
``--help``, and a user mistake as one ``error:`` line with exit status 2; and an argparse parser
that reports a mistake the same way."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Optional, Sequence, Tuple, Type

import pydantic

from utils.config import ConfigError, user_error_message


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one ``error: ...`` line and exit status 2 (not the
    usage block, which ``--help`` shows)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see --help)\n")


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def help_text(doc: Optional[str], config_cls: Type[pydantic.BaseModel]) -> str:
    """The script's docstring and every ``key=value`` option with its default."""
    options = []
    for name, field in config_cls.model_fields.items():
        options.append(f"  {name}" + (" (required)" if field.is_required() else f"={field.default!r}"))
    return ((doc or "").strip() + "\n\nOptions (key=value):\n" + "\n".join(options)).strip()


def run_config_cli(config_cls: Type[pydantic.BaseModel], run: Callable[[Any], Any], argv: Optional[Sequence[str]] = None,
                   user_errors: Tuple[Type[BaseException], ...] = (ConfigError,), doc: Optional[str] = None) -> None:
    """Parse ``argv`` (default: the command line) into ``config_cls`` and call ``run`` with it.
    ``user_errors`` (and a config that does not validate) print one line (rank 0) and exit 2;
    ``--help`` prints ``doc`` and the options."""
    from omegaconf import OmegaConf

    from utils.functions import validation_error_line

    args = list(sys.argv[1:] if argv is None else argv)
    if wants_help(args):
        print(help_text(doc, config_cls))
        return
    try:
        raw = OmegaConf.to_container(OmegaConf.from_cli(args), resolve=True)
        try:
            config = config_cls(**raw)  # type: ignore[arg-type]
        except pydantic.ValidationError as e:
            raise ConfigError(validation_error_line(e)) from None
        run(config)
    except (ConfigError, *user_errors) as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {user_error_message(e)}", file=sys.stderr)
        sys.exit(2)
