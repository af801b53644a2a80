"""The run's metrics files, readable from the run folder without W&B: ``train_metrics.jsonl``
(the training metrics W&B gets) and ``eval_metrics.jsonl`` (one line per evaluation).

Rank 0 gets every step's metrics (as W&B does; read back ``log_interval`` steps at a time, see
``training/metrics_readback.py``); :class:`TrainMetricsLog` averages those readings over ``train_metrics_interval`` steps and appends one JSON line per
interval, with the keys W&B gets (``train/lm_loss``, ``train/exact_accuracy``, ``train/lr``, ...)::

    {"step": 400, "averaged_over": 20, "train/accuracy": 0.93, "train/exact_accuracy": 0.41, ...}

``step`` is the last step of the interval, ``averaged_over`` the number of readings averaged. The
interval in progress is also written at every evaluation and at the end of training, so the file
has a line at each evaluated step.

A step's accuracies and ``steps`` are means over the rows that halted at that step (``count``;
the original logs 0 when none did, as ACT halts rows every few steps): the average takes them from
the readings where rows halted, while losses, ``lr`` and ``count`` are plain means. A line with no
halted row holds ``null`` for them.
:func:`summary_line` sets the average of the readings since the last evaluation beside the test
metrics; :func:`write_metrics_line` appends an evaluation's line to ``eval_metrics.jsonl``, the
train side of it from :func:`eval_line_train`.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional

LINES_PER_RUN = 200  # default: about this many lines per run, whatever its length


def average(readings: List[Dict[str, float]]) -> Dict[str, Optional[float]]:
    """The mean of W&B-style readings (see the module docstring for per-halted-row metrics).

    A per-halted-row metric of readings where no row halted has no value: None (``null`` in the
    file), not the 0 W&B gets, which would draw every curve as a sawtooth."""
    halted = [m for m in readings if m.get("train/count", 1.0) > 0]
    out: Dict[str, Optional[float]] = {}
    for k in sorted({k for m in readings for k in m}):
        plain = k.endswith("loss") or k in ("train/lr", "train/count")
        values = [m[k] for m in (readings if plain else halted) if k in m]
        out[k] = sum(values) / len(values) if values else None
    return out


def default_interval(total_steps: int, log_interval: int) -> int:
    """Steps per line: a multiple of ``log_interval`` giving at most about ``LINES_PER_RUN`` lines."""
    per_line = max(1, math.ceil(total_steps / LINES_PER_RUN))
    return log_interval * math.ceil(per_line / log_interval)


class TrainMetricsLog:
    """Averages training metrics over ``interval`` steps into ``<folder>/train_metrics.jsonl`` (rank 0).

    ``resumed_step``: a resumed run first drops the lines an interrupted run wrote after that step,
    so the file reads as if the run had never stopped."""

    def __init__(self, folder: Optional[str], interval: int, resumed_step: Optional[int] = None):
        self.path = os.path.join(folder, "train_metrics.jsonl") if folder else None
        self.interval = interval
        self.pending: List[Dict[str, float]] = []
        self.last_step: Optional[int] = None
        self.last_line: Optional[Dict[str, Any]] = None
        self.since_eval: List[Dict[str, float]] = []  # readings since the last evaluation
        if self.path and resumed_step is not None and os.path.isfile(self.path):
            self._drop_after(resumed_step)

    def add(self, step: int, metrics: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """One reading (the dict W&B gets at ``step``); writes and returns a line when an interval ends."""
        reading = {k: float(v) for k, v in metrics.items()}
        self.pending.append(reading)
        self.since_eval.append(reading)
        self.last_step = step
        return self.flush() if step % self.interval == 0 else None

    def flush(self) -> Optional[Dict[str, Any]]:
        """Write the interval in progress (if any reading is pending) and return its line."""
        if not self.pending:
            return None
        line: Dict[str, Any] = {"step": self.last_step, "averaged_over": len(self.pending), **average(self.pending)}
        self.pending = []
        self.last_line = line
        if self.path:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(line) + "\n")
        return line

    def at_evaluation(self) -> Optional[Dict[str, Any]]:
        """Write the interval in progress; return the average of the readings since the last
        evaluation (``averaged_over``: how many) and start anew."""
        self.flush()
        if not self.since_eval:
            return None
        summary = {"averaged_over": len(self.since_eval), **average(self.since_eval)}
        self.since_eval = []
        return summary

    def _drop_after(self, step: int) -> None:
        from utils.safe_io import atomic_write_text
        with open(self.path) as f:  # type: ignore[arg-type]
            lines = f.readlines()
        kept = []
        for line in lines:
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by the interruption
        if len(kept) != len(lines):
            atomic_write_text(self.path, "".join(kept))  # type: ignore[arg-type]


def eval_line_train(train: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The ``"train"`` entry of an ``eval_metrics.jsonl`` line: the summary's train side, named as
    the test sets' metrics are (``exact_accuracy``, not ``train/exact_accuracy``); {} without one."""
    if not train:
        return {}
    return {"train": {k.split("/", 1)[-1]: v for k, v in train.items()}}


def summary_line(step: int, train: Optional[Dict[str, Any]], test: Dict[str, Any]) -> str:
    """``step N: train ... | test <set> ...``: exact accuracy, accuracy and loss side by side."""
    def part(values: Dict[str, Any], prefix: str) -> str:
        shown = []
        for name in ("exact_accuracy", "accuracy", "lm_loss"):
            v = values.get(prefix + name)
            if isinstance(v, (int, float)):
                shown.append(f"{name} {100 * v:.1f}%" if "accuracy" in name else f"{name} {v:.4g}")
        return ", ".join(shown)
    text = f"step {step}: "
    if train:
        text += f"train {part(train, 'train/')} (mean of the {train['averaged_over']} step(s) since the last evaluation)"
    else:
        text += "train: no reading yet"
    for set_name, values in test.items():
        if isinstance(values, dict) and any(k in values for k in ("exact_accuracy", "accuracy", "lm_loss")):
            text += f" | test {set_name} {part(values, '')}"
    return text


def write_metrics_line(checkpoint_path: Optional[str], step: int, metrics: Dict[str, Any]) -> None:
    """Append evaluation metrics to ``<checkpoint_path>/eval_metrics.jsonl`` (readable without W&B)."""
    if checkpoint_path is None:
        return
    os.makedirs(checkpoint_path, exist_ok=True)
    with open(os.path.join(checkpoint_path, "eval_metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")
