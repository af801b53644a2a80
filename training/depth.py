"""Progressive depth curriculum (CGAR, Qasim & Zhang, arXiv 2511.08653): the recursion depth of
training steps (``H_cycles``, ``L_cycles``) grows with training progress in stages, e.g. (1, 2) for
the first 30% of the steps, (2, 4) up to 60%, then the configured depth. Evaluation always runs at
the configured depth.

The stage is a function of the step alone (progress = steps done / the run's ``total_steps``, the
learning-rate schedule's length), so a resumed run trains each step at the depth the uninterrupted
run would, with nothing more to save. The depth reaches the model as plain ints in its config for
the duration of the step, so a compiled model specialises once per stage (one graph per stage) and
never in between.
"""
from __future__ import annotations

import contextlib
from typing import Any, Mapping, Optional, Sequence, Tuple

import pydantic


class DepthStage(pydantic.BaseModel):
    """Train at ``H_cycles`` x ``L_cycles`` while the progress is below ``until`` (a fraction of the run)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    until: float
    H_cycles: int
    L_cycles: int


def check_depth_schedule(stages: Sequence[DepthStage], arch: Mapping[str, Any]) -> None:
    """One-line ``ValueError`` unless the fractions increase within (0, 1], the cycles are positive
    and no stage is deeper than the arch's configured depth (which has both ``H_cycles`` and ``L_cycles``)."""
    full_h, full_l = arch.get("H_cycles"), arch.get("L_cycles")
    if not isinstance(full_h, int) or not isinstance(full_l, int):
        raise ValueError(f"depth_schedule: arch {arch.get('name')} has no H_cycles and L_cycles to schedule")
    previous = 0.0
    for i, stage in enumerate(stages):
        where = f"depth_schedule[{i}]"
        if not previous < stage.until <= 1:
            raise ValueError(f"{where}: until must increase from stage to stage within (0, 1], got {stage.until} after {previous}")
        if stage.H_cycles < 1 or stage.L_cycles < 1:
            raise ValueError(f"{where}: H_cycles and L_cycles must be >= 1, got {stage.H_cycles}, {stage.L_cycles}")
        if stage.H_cycles > full_h or stage.L_cycles > full_l:
            raise ValueError(f"{where}: H_cycles={stage.H_cycles}, L_cycles={stage.L_cycles} is deeper than the configured "
                             f"arch.H_cycles={full_h}, arch.L_cycles={full_l} (the depth of the last stage and of evaluation)")
        previous = stage.until


def depth_at(stages: Optional[Sequence[DepthStage]], step: int, total_steps: int) -> Optional[Tuple[int, int]]:
    """``(H_cycles, L_cycles)`` of the update that makes ``step`` (counted from 1), whose progress is
    ``(step - 1) / total_steps``; None: the configured depth (no schedule, or past its last stage)."""
    progress = (step - 1) / total_steps
    for stage in stages or ():
        if progress < stage.until:
            return stage.H_cycles, stage.L_cycles
    return None


@contextlib.contextmanager
def training_depth(act_model: Any, depth: Optional[Tuple[int, int]]):
    """Run the block at ``depth`` (None: as configured) on ``act_model`` (the ACT model inside the
    loss head), restoring the configured depth afterwards, also on error."""
    if depth is None:
        yield
        return
    with act_model.at_depth(*depth):
        yield
