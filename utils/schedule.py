"""Learning-rate schedule of the original: linear warm-up, then cosine decay to ``min_ratio``."""
from __future__ import annotations

import math


def cosine_schedule_with_warmup_lr_lambda(current_step: float, *, base_lr: float, num_warmup_steps: int, num_training_steps: int,
                                          min_ratio: float = 0.0, num_cycles: float = 0.5) -> float:
    """The learning rate at ``current_step`` (the original's formula, as a function of the step)."""
    if current_step < num_warmup_steps:
        return base_lr * float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    return base_lr * (min_ratio + max(0.0, (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))))
