"""Loading model classes by identifier and loading state dicts tolerant of ``torch.compile``."""
from __future__ import annotations

import importlib
import inspect
from typing import Dict, Mapping

import pydantic
import torch
from torch import nn

COMPILE_PREFIX = "_orig_mod."


def _resolve(identifier: str, prefix: str):
    if not isinstance(identifier, str) or identifier.count("@") != 1 or not all(identifier.split("@")):
        raise ValueError(f"model identifier {identifier!r}: expected '<module path>@<ClassName>', "
                         f"e.g. 'hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1'")
    module_path, class_name = identifier.split("@")
    try:
        module = importlib.import_module(prefix + module_path)
    except ModuleNotFoundError as e:
        if e.name and (prefix + module_path).startswith(e.name):
            raise ValueError(f"model identifier {identifier!r}: no module {prefix + module_path!r}") from None
        raise
    if not hasattr(module, class_name):
        raise ValueError(f"model identifier {identifier!r}: module {prefix + module_path!r} has no class {class_name!r}")
    return module, getattr(module, class_name)


def load_model_class(identifier: str, prefix: str = "models."):
    """``"hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"`` -> that class (imported from ``prefix``)."""
    return _resolve(identifier, prefix)[1]


def get_model_source_path(identifier: str, prefix: str = "models.") -> str:
    """Source file of the module an identifier names (copied next to checkpoints)."""
    return inspect.getsourcefile(_resolve(identifier, prefix)[0])  # type: ignore[return-value]


def validation_error_line(e: pydantic.ValidationError) -> str:
    """A pydantic error as one line: ``field: problem; other.field: problem``."""
    problems = []
    for err in e.errors():
        where = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {msg}" if where else msg)
    return "; ".join(problems)


def strip_compile_prefix(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove the ``_orig_mod.`` prefix that a ``torch.compile``d module puts on every key."""
    return {(k[len(COMPILE_PREFIX):] if k.startswith(COMPILE_PREFIX) else k): v for k, v in state_dict.items()}


def unwrap_compiled(module: nn.Module) -> nn.Module:
    """The module under a ``torch.compile`` wrapper (itself when not compiled)."""
    return getattr(module, "_orig_mod", module)


def check_state_dict_fits(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """``ValueError`` (one line naming the keys) unless ``state_dict`` has the keys and shapes of
    ``expected`` (a model's state dict, possibly on the meta device), and floating-point values
    where the model has them (an int8 file would load as whole numbers, silently)."""
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    problems = []
    if missing:
        problems.append(f"missing keys: {_key_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_key_list(unexpected)}")
    mismatched = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if mismatched:
        problems.append(f"shape mismatch: {'; '.join(mismatched[:8])}")
    kinds = [f"{k} {state_dict[k].dtype} vs model {v.dtype}" for k, v in expected.items()
             if k in state_dict and v.is_floating_point() and not state_dict[k].is_floating_point()]
    if kinds:
        problems.append(f"not floating-point: {'; '.join(kinds[:4])}")
    if problems:
        raise ValueError(f"{source} does not fit the model: " + " | ".join(problems))


def _key_list(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state_dict_flexible(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Load ``state_dict`` into ``module`` (or its compiled wrapper), keys with or without ``_orig_mod.``.

    Missing or unexpected keys, shape mismatches and integer tensors for floating-point weights
    raise one ``ValueError`` naming the keys (:func:`check_state_dict_fits`).
    """
    target = unwrap_compiled(module)
    state_dict = strip_compile_prefix(state_dict)
    check_state_dict_fits(target.state_dict(), state_dict, source)
    target.load_state_dict(state_dict, strict=True)
