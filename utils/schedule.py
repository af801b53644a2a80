"""Learning-rate schedules: the original's (linear warm-up, then cosine decay to ``min_ratio``) and
warm-up-stable-decay (``lr_schedule=wsd``: the peak LR held, then a linear decay at the end)."""
from __future__ import annotations

import math
from typing import Callable


def _warmup_then(shape: Callable[[float], float], current_step: float, base_lr: float, num_warmup_steps: int,
                 num_training_steps: int) -> float:
    """The linear warm-up both schedules share, then ``base_lr`` times ``shape(progress)``, with
    progress the share of the steps after the warm-up done (past 1 beyond ``num_training_steps``)."""
    if current_step < num_warmup_steps:
        return base_lr * float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    return base_lr * shape(progress)


def cosine_schedule_with_warmup_lr_lambda(current_step: float, *, base_lr: float, num_warmup_steps: int, num_training_steps: int,
                                          min_ratio: float = 0.0, num_cycles: float = 0.5) -> float:
    """The learning rate at ``current_step`` (the original's formula, as a function of the step)."""
    return _warmup_then(lambda progress: min_ratio + max(0.0, (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))),
                        current_step, base_lr, num_warmup_steps, num_training_steps)


def wsd_schedule_lr_lambda(current_step: float, *, base_lr: float, num_warmup_steps: int, num_training_steps: int,
                           min_ratio: float = 0.0, decay_fraction: float = 0.2) -> float:
    """Warm-up-stable-decay: the same linear warm-up, then ``base_lr`` held until the last
    ``decay_fraction`` of the steps after the warm-up, then a linear decay to ``base_lr * min_ratio``
    at ``num_training_steps`` (and held there past it)."""
    return _warmup_then(lambda progress: min_ratio + (1 - min_ratio) * min(1.0, max(0.0, (1.0 - progress) / decay_fraction)),
                        current_step, base_lr, num_warmup_steps, num_training_steps)
