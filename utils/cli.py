"""Command lines: the one ``key=value`` parser of the entry scripts that are not Hydra's
(``evaluate.py``, ``predict.py``, ``scripts/analyze_checkpoint.py``, ...): OmegaConf parsing into a pydantic config,
``--help``, and a user mistake as one ``error:`` line with exit status 2; and an argparse parser
that reports a mistake the same way."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

import pydantic

from utils.config import ConfigError, user_error_message
from utils.errors import UserError

C = TypeVar("C", bound=pydantic.BaseModel)


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


def parse_key_values(args: Sequence[str], literal: Sequence[str] = ()) -> Dict[str, Any]:
    """``key=value`` arguments into a dict. Values follow OmegaConf's command-line rules (numbers,
    booleans, ``[a,b]`` lists), except for the keys in ``literal``, which keep the text as typed (a
    puzzle such as ``1,2,3`` or a JSON grid, a file name). A leading ``+`` (Hydra's spelling of a
    new key) is dropped."""
    from omegaconf import OmegaConf

    typed: List[str] = []
    kept: Dict[str, Any] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.strip().lstrip("+")
        if not sep or not key:
            raise ConfigError(f"argument {arg!r}: expected key=value (see --help)")
        if key in literal:
            kept[key] = value
        else:
            typed.append(f"{key}={value}")
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_cli(typed), resolve=True)
    except Exception as e:  # OmegaConf's YAML and grammar errors share no base class
        raise ConfigError(f"cannot read the command line: {str(e).splitlines()[0]}") from None
    return {**parsed, **kept}  # type: ignore[dict-item]


def parse_config(config_cls: Type[C], args: Sequence[str], literal: Sequence[str] = ()) -> C:
    """``key=value`` arguments (see :func:`parse_key_values`) validated into ``config_cls``; a
    mistake is a one-line :class:`ConfigError`."""
    from utils.functions import validation_error_line

    try:
        return config_cls(**parse_key_values(args, literal))
    except pydantic.ValidationError as e:
        raise ConfigError(validation_error_line(e)) from None


def run_config_cli(config_cls: Type[pydantic.BaseModel], run: Callable[[Any], Any], argv: Optional[Sequence[str]] = None,
                   user_errors: Tuple[Type[BaseException], ...] = (), doc: Optional[str] = None,
                   literal: Sequence[str] = ()) -> None:
    """Parse ``argv`` (default: the command line) into ``config_cls`` and call ``run`` with it.
    A :class:`UserError` (a config that does not validate among them) and ``user_errors`` print
    one line (rank 0) and exit 2;
    ``--help`` prints ``doc`` and the options; ``literal``: keys whose values stay text."""
    args = list(sys.argv[1:] if argv is None else argv)
    if wants_help(args):
        print(help_text(doc, config_cls))
        return
    try:
        run(parse_config(config_cls, args, literal))
    except (UserError, *user_errors) as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {user_error_message(e)}", file=sys.stderr)
        sys.exit(2)
