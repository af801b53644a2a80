"""Command-line spelling of ``arch.*`` overrides and the check that every ``arch`` key means something.

Hydra refuses ``+arch.key=v`` when the arch yaml already has ``key`` and ``arch.key=v`` when it
has not, so whether a key needs the ``+`` would depend on the arch. The entry points rewrite
both spellings to Hydra's add-or-override form ``++arch.key=v``, and :func:`check_arch_keys`
then rejects keys the model does not know (a typo would otherwise be ignored silently).
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, List, Mapping, Optional

# Keys of ``arch`` that are not model config fields.
ARCH_META_KEYS = ("name", "loss")
# Model config fields that pretrain.py fills from the dataset and the batch size.
SET_BY_PRETRAIN = ("batch_size", "seq_len", "vocab_size", "num_puzzle_identifiers", "causal")

_ARCH_OVERRIDE = re.compile(r"^\+?arch\.")


def normalise_arch_overrides(args: Iterable[str]) -> List[str]:
    """``arch.k=v`` and ``+arch.k=v`` -> ``++arch.k=v``; every other argument unchanged."""
    return [_ARCH_OVERRIDE.sub("++arch.", a) if "=" in a else a for a in args]


def plus_unknown_keys(args: Iterable[str], known: Iterable[str]) -> List[str]:
    """``key=v`` for a top-level key the base config lacks -> ``+key=v``. Hydra refuses such an
    override with a multi-line struct error; added, it reaches the config schema, which names it
    in one line with the nearest valid key. Flags, ``hydra.*`` and prefixed overrides are kept."""
    known = set(known) | {"hydra"}
    out = []
    for a in args:
        key = a.split("=", 1)[0]
        # 'hydra/launcher=...' names a config group (kept); so do 'arch=...' and known keys
        if "=" in a and not a.startswith(("-", "+", "~")) and "@" not in key and re.split(r"[./]", key)[0] not in known:
            a = "+" + a
        out.append(a)
    return out


def check_arch_keys(keys: Iterable[str], config_cls, arch_name: str) -> None:
    """Raise ``ValueError`` (one line) for an ``arch`` key that ``config_cls`` has no field for."""
    fields = [f for f in config_cls.model_fields if f not in SET_BY_PRETRAIN]
    valid = sorted(set(fields) | set(ARCH_META_KEYS))
    for key in keys:
        if key in SET_BY_PRETRAIN:
            raise ValueError(f"arch.{key} is set by pretrain.py from the dataset and global_batch_size; remove it")
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(near)}?" if near else f"valid keys: {', '.join(valid)}"
            raise ValueError(f"arch.{key}: unknown key for {arch_name}; {hint}")


def configured_segments(arch: Mapping[str, Any]) -> Optional[int]:
    """The ACT segments an ``arch`` mapping configures: ``halt_max_steps``, or URM's ``loops`` (its
    name for the same number); None when it has neither."""
    return arch.get("halt_max_steps") or arch.get("loops")
