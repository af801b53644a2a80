"""Progressive depth curriculum (CGAR, Qasim & Zhang, arXiv 2511.08653): the recursion depth of
training steps (``H_cycles``, ``L_cycles``) grows with training progress in stages, e.g. (1, 2) for
the first 30% of the steps, (2, 4) up to 60%, then the configured depth. A stage may also cap the
ACT segments of a training example (``halt_max_steps``, the deep-supervision steps), so that early
on, before any example halts by itself, more examples pass through the batch. Evaluation always
runs at the configured depth and segments.

The stage is a function of the step alone (progress = steps done / the run's ``total_steps``, the
learning-rate schedule's length), so a resumed run trains each step at the depth the uninterrupted
run would, with nothing more to save. The depth reaches the model as plain ints in its config for
the duration of the step, so a compiled model specialises once per stage (one graph per stage) and
never in between.
"""
from __future__ import annotations

import contextlib
from typing import Any, Mapping, Optional, Sequence

import pydantic

from utils.arch_config import configured_segments


class DepthStage(pydantic.BaseModel):
    """While the progress is below ``until`` (a fraction of the run), train at ``H_cycles`` x
    ``L_cycles`` (given together) and/or at most ``halt_max_steps`` ACT segments per example; what a
    stage leaves out stays as configured."""

    model_config = pydantic.ConfigDict(extra="forbid")
    until: float
    H_cycles: Optional[int] = None
    L_cycles: Optional[int] = None
    halt_max_steps: Optional[int] = None


def check_depth_schedule(stages: Sequence[DepthStage], arch: Mapping[str, Any]) -> None:
    """One-line ``ValueError`` unless the fractions increase within (0, 1], each stage sets the
    recursion depth (both cycles, positive, and the arch has them) or the segments or both, and no
    stage is deeper or longer than the arch's configured values (those of the last stage and of evaluation)."""
    full_h, full_l = arch.get("H_cycles"), arch.get("L_cycles")
    full_segments = configured_segments(arch)
    previous = 0.0
    for i, stage in enumerate(stages):
        where = f"depth_schedule[{i}]"
        if not previous < stage.until <= 1:
            raise ValueError(f"{where}: until must increase from stage to stage within (0, 1], got {stage.until} after {previous}")
        if (stage.H_cycles is None) != (stage.L_cycles is None):
            raise ValueError(f"{where}: give H_cycles and L_cycles together (the recursion depth), or neither")
        if stage.H_cycles is None and stage.halt_max_steps is None:
            raise ValueError(f"{where}: sets nothing; give H_cycles and L_cycles, halt_max_steps, or both")
        if stage.H_cycles is not None and stage.L_cycles is not None:
            if not isinstance(full_h, int) or not isinstance(full_l, int):
                raise ValueError(f"depth_schedule: arch {arch.get('name')} has no H_cycles and L_cycles to schedule")
            if stage.H_cycles < 1 or stage.L_cycles < 1:
                raise ValueError(f"{where}: H_cycles and L_cycles must be >= 1, got {stage.H_cycles}, {stage.L_cycles}")
            if stage.H_cycles > full_h or stage.L_cycles > full_l:
                raise ValueError(f"{where}: H_cycles={stage.H_cycles}, L_cycles={stage.L_cycles} is deeper than the configured "
                                 f"arch.H_cycles={full_h}, arch.L_cycles={full_l} (the depth of the last stage and of evaluation)")
        if stage.halt_max_steps is not None and not 1 <= stage.halt_max_steps <= (full_segments or 0):
            raise ValueError(f"{where}: halt_max_steps must be in [1, {full_segments}] (the configured arch.halt_max_steps, "
                             f"the segments of the last stage and of evaluation), got {stage.halt_max_steps}")
        previous = stage.until


def depth_at(stages: Optional[Sequence[DepthStage]], step: int, total_steps: int) -> Optional[DepthStage]:
    """The stage of the update that makes ``step`` (counted from 1), whose progress is
    ``(step - 1) / total_steps``; None: as configured (no schedule, or past its last stage)."""
    progress = (step - 1) / total_steps
    for stage in stages or ():
        if progress < stage.until:
            return stage
    return None


@contextlib.contextmanager
def training_depth(act_model: Any, stage: Optional[DepthStage]):
    """Run the block at ``stage``'s depth and segments (None: as configured) on ``act_model`` (the
    ACT model inside the loss head), restoring the configured values afterwards, also on error."""
    if stage is None:
        yield
        return
    with act_model.at_depth(stage.H_cycles, stage.L_cycles, halt_max_steps=stage.halt_max_steps):
        yield
