"""When and what to ``torch.compile``: the ``compile=auto|true|false|regional`` config key.

``auto`` compiles on CUDA always. On a CPU, compilation costs tens of seconds before the first
step (one graph for training, one for evaluation) and then makes every step faster, so ``auto``
compiles only runs long enough to earn that back: at least ``CPU_BREAK_EVEN_STEPS`` training
steps, measured at the demo configuration (docs/performance.md, "Performance"); larger models gain more per
step for about the same compile time, so they break even sooner. ``DISABLE_COMPILE`` (the original
code's switch) turns compilation off whatever the config says.

The compiled module is the usual ``torch.compile`` wrapper: its state-dict keys carry the
``_orig_mod.`` prefix, which saving strips (``utils.functions.strip_compile_prefix``).

``regional`` compiles only the modules a segment applies over and over (the model names them:
``ACTInner.repeated_modules``), each in place, so the state-dict keys do not change. It compiles
in less time for a smaller gain per step: 18 s for 1.39x the eager steps per second against 41 s
for 1.67x for the whole model, measured on the speedrun's HRM (docs/training.md, "Faster
training"). ``auto`` never chooses it: which pays more depends on the step time, unknown before
the first steps.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Literal, Optional, Union

import torch
from torch import nn

CompileSetting = Union[bool, Literal["auto", "regional"]]

# Training steps after which compiling pays back on a CPU. Step-level figures under load suggested
# ~500, but a full `make demo` (625 steps, 2-core machine, idle) took 288 s compiled against 195 s
# eager: compiling the train and eval graphs cost ~120 s for ~0.04 s saved per step, so ~3000
# (docs/performance.md "Performance").
CPU_BREAK_EVEN_STEPS = 3000

# The compiled AdamATan2 update (utils/adam_atan2.py) compiles in seconds; its fused part measured
# 0.78x the eager ops it replaces (loaded machine, docs/performance.md "Performance"): used for large, long runs.
CPU_OPTIMIZER_BREAK_EVEN = 4e9


def should_compile(setting: CompileSetting, device: torch.device, total_steps: Optional[int]) -> bool:
    """Whether to compile the whole model for a run of ``total_steps`` training steps on ``device``.

    ``total_steps=None`` means evaluation only: ``auto`` then compiles on CUDA but not on a CPU.
    """
    if "DISABLE_COMPILE" in os.environ or setting == "regional":
        return False
    if setting != "auto":
        return bool(setting)
    if device.type == "cuda":
        return True
    return total_steps is not None and total_steps >= CPU_BREAK_EVEN_STEPS


def should_compile_optimizer(model_compiled: bool, device: torch.device, n_params: int, total_steps: Optional[int]) -> bool:
    """Whether AdamATan2 fuses its update with ``torch.compile`` (CPU only; bit-identical results)."""
    if not model_compiled or device.type != "cpu" or total_steps is None:
        return False
    return n_params * total_steps >= CPU_OPTIMIZER_BREAK_EVEN


def compile_model(model: nn.Module) -> nn.Module:
    """The model compiled as the original compiles it (static shapes). Each arch traces as one
    graph per mode (train, eval) without breaks (tests/test_compile.py), built once and reused
    across mode switches and EMA swaps."""
    return torch.compile(model, dynamic=False)  # type: ignore[return-value]


def should_compile_regions(setting: CompileSetting) -> bool:
    """Whether to compile the repeated modules only (``compile=regional``; ``DISABLE_COMPILE`` wins)."""
    return setting == "regional" and "DISABLE_COMPILE" not in os.environ


def compile_regions(modules: Iterable[nn.Module], **compile_kwargs: Any) -> None:
    """Compile each module in place (static shapes, as :func:`compile_model`); modules of the same
    structure share their graphs. ``compile_kwargs`` go to ``torch.compile`` (tests pass a backend)."""
    for module in modules:
        module.compile(**{"dynamic": False, **compile_kwargs})


def has_compiled_regions(model: nn.Module) -> bool:
    """Whether some module of ``model`` was compiled in place (:func:`compile_regions`)."""
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())
