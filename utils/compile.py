"""When and what to ``torch.compile``: the ``compile=auto|true|false|regional`` config key.

``regional`` compiles only the modules a segment applies over and over (the model names them:
``ACTInner.repeated_modules``), each in place, so the state-dict keys do not change. ``true``
compiles the whole model: the usual ``torch.compile`` wrapper, whose state-dict keys carry the
``_orig_mod.`` prefix, which saving strips (``utils.functions.strip_compile_prefix``).

``auto`` compiles the whole model on CUDA always. On a CPU it compiles the regions, only in runs
long enough to earn their compile time back (at least ``CPU_REGIONAL_BREAK_EVEN_STEPS`` training
steps) and only with a C++ compiler on the machine, which compiling for a CPU needs. On a CPU the
regions beat the whole model at every run length measured: in the speedrun's training loop their
steps were no slower and the run started ~45 s sooner (docs/training.md, "Faster training").
Evaluation alone (no training steps) compiles on CUDA only.
``DISABLE_COMPILE`` (the original code's switch) turns compilation off whatever the config says.
"""
from __future__ import annotations

import os
import shutil
from typing import Any, Iterable, Literal, Optional, Union

import torch
from torch import nn

CompileSetting = Union[bool, Literal["auto", "regional"]]

# Training steps after which compiling the regions pays back on a CPU. At the demo configuration
# (2 cores) they compiled in ~20 s and then ran 0.25 s steps against 0.37 s eager: even after ~200
# steps; the whole 624-step demo took 186 s against 255 s eager (docs/performance.md, "Compiling
# on a CPU"). 300 leaves a margin for models whose eager steps are cheaper.
CPU_REGIONAL_BREAK_EVEN_STEPS = 300

# The compiled AdamATan2 update (utils/adam_atan2.py) compiles in seconds; its fused part measured
# 0.78x the eager ops it replaces (loaded machine, docs/performance.md "Performance"): used for large, long runs.
CPU_OPTIMIZER_BREAK_EVEN = 4e9


def should_compile(setting: CompileSetting, device: torch.device, total_steps: Optional[int]) -> bool:
    """Whether to compile the whole model (``compile=true``, or ``auto`` on CUDA) for a run of
    ``total_steps`` training steps on ``device``; ``total_steps=None`` means evaluation only."""
    if "DISABLE_COMPILE" in os.environ or setting == "regional":
        return False
    if setting != "auto":
        return bool(setting)
    return device.type == "cuda"


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


def should_compile_regions(setting: CompileSetting, device: torch.device, total_steps: Optional[int]) -> bool:
    """Whether to compile the repeated modules only: ``compile=regional``, or ``auto`` on a CPU for a
    run of at least ``CPU_REGIONAL_BREAK_EVEN_STEPS`` training steps (``DISABLE_COMPILE`` wins)."""
    if "DISABLE_COMPILE" in os.environ:
        return False
    if setting == "auto":
        return (device.type == "cpu" and total_steps is not None and total_steps >= CPU_REGIONAL_BREAK_EVEN_STEPS
                and has_cpp_compiler())
    return setting == "regional"


def has_cpp_compiler() -> bool:
    """Whether a C++ compiler is on the PATH (``$CXX``, else g++ or clang++): ``torch.compile``
    builds its CPU kernels with one, so without it ``auto`` trains eager instead of failing."""
    return any(shutil.which(name) for name in (os.environ.get("CXX"), "g++", "clang++", "c++") if name)


def compile_regions(modules: Iterable[nn.Module], **compile_kwargs: Any) -> None:
    """Compile each module in place (static shapes, as :func:`compile_model`); modules of the same
    structure share their graphs. ``compile_kwargs`` go to ``torch.compile`` (tests pass a backend)."""
    for module in modules:
        module.compile(**{"dynamic": False, **compile_kwargs})


def has_compiled_regions(model: nn.Module) -> bool:
    """Whether some module of ``model`` was compiled in place (:func:`compile_regions`)."""
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())
