"""Best checkpoint and early stopping (``best_metric``, ``best_metric_mode``, ``early_stop_patience``).

After each evaluation the training loop hands the logged metrics to :class:`BestTracker`. When
the chosen metric improved, the weights are written as ``<checkpoint_path>/best`` with
``best.json`` (``step``, ``metric``, ``value``) next to it; nothing else deletes them. The
tracker's state travels in the resume state, so a resumed run keeps its best-so-far.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch

from utils.safe_io import atomic_torch_save, atomic_write_text

BEST_WEIGHTS = "best"
BEST_INFO = "best.json"


@dataclass
class BestTracker:
    metric: str
    mode: str = "max"
    patience: Optional[int] = None
    # Best so far (None before the first evaluation) and evaluations since it.
    step: Optional[int] = None
    value: Optional[float] = None
    evals_since_best: int = 0

    def update(self, step: int, metrics: Dict[str, Any]) -> bool:
        """Record one evaluation (flat names such as ``all/exact_accuracy``); True when it is a new best.

        Raises ``ValueError`` listing the available names when ``metric`` is not among them.
        """
        if self.metric not in metrics:
            available = ", ".join(sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))) or "none"
            raise ValueError(f"best_metric={self.metric}: the evaluation logged no such metric; available: {available}")
        value = float(metrics[self.metric])
        better = not math.isnan(value) and (self.value is None or (value > self.value if self.mode == "max" else value < self.value))
        if better:
            self.step, self.value, self.evals_since_best = step, value, 0
        else:
            self.evals_since_best += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.evals_since_best >= self.patience

    def state_dict(self) -> Dict[str, Any]:
        return {"step": self.step, "value": self.value, "evals_since_best": self.evals_since_best}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.step, self.value, self.evals_since_best = state["step"], state["value"], state["evals_since_best"]


def save_best(folder: str, weights: Dict[str, torch.Tensor], tracker: BestTracker) -> None:
    """Write ``best`` (weights, as ``step_N``) and then ``best.json``, each atomically."""
    atomic_torch_save(weights, os.path.join(folder, BEST_WEIGHTS))
    info = {"step": tracker.step, "metric": tracker.metric, "value": tracker.value}
    atomic_write_text(os.path.join(folder, BEST_INFO), json.dumps(info) + "\n")


def read_best_info(folder: str) -> Optional[Dict[str, Any]]:
    """``best.json`` of a checkpoint folder, or None when there is none."""
    path = os.path.join(folder, BEST_INFO)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)

