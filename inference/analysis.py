"""Numbers a paper reports about a checkpoint, computed from saved evaluation outputs (numpy).

Pure functions of arrays, used by ``scripts/analyze_checkpoint.py``. Labels follow the loader's
convention: ignored positions hold -100; an example is exactly right when every labelled position
is predicted.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

IGNORE_LABEL_ID = -100
# Share of test labels that are train labels from which the memorisation rate says nothing on its
# own (4x4 Sudoku has 288 solution grids: every test label is a train label).
COVERED = 0.9


def exact_correct(preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``bool [N]``: every labelled position of the row is predicted right."""
    mask = labels != IGNORE_LABEL_ID
    return np.all((preds == labels) | ~mask, axis=-1)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> Dict[str, object]:
    """Reliability diagram of a confidence in [0, 1] against correctness, in ``bins`` equal-width bins.

    Returns per bin ``count``, ``confidence`` (mean) and ``accuracy`` (NaN for empty bins), the
    ``edges``, and ``ece``: the expected calibration error, sum over bins of
    ``count / N * |accuracy - confidence|``. A confidence of exactly 1 falls in the last bin.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.floor(confidence * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=bins) / count
    n = max(len(confidence), 1)
    ece = float(np.nansum(count / n * np.abs(accuracy - mean_conf)))
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy, "ece": ece}


def _row_keys(rows: np.ndarray) -> np.ndarray:
    """One hashable bytes value per row (int64 so that dtypes never make equal rows differ)."""
    rows = np.ascontiguousarray(np.asarray(rows, dtype=np.int64))
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()


def memorisation(test_preds: np.ndarray, test_labels: np.ndarray, train_labels: np.ndarray) -> Dict[str, float]:
    """How much of the test answers are answers of the train split.

    Positions the test label ignores are ignored in the prediction too (set to -100), and
    ``train_labels`` must use -100 for ignored positions. Returns

    - ``test_labels_in_train``: share of test examples whose label is also a train label (overlap);
    - ``preds_in_train`` (the memorisation rate): share of test predictions equal to a train label;
    - ``wrong_preds_in_train``: among wrong test predictions, the share equal to a train label;
    - ``wrong``: the number of wrong test predictions;
    - ``baseline``: the memorisation rate a model that memorises nothing would show at this
      accuracy: the share of test examples predicted right whose label is a train label;
    - ``uninformative``: the train labels cover the test labels (at least ``COVERED`` of them), so
      right answers are train answers anyway and only the wrong predictions tell anything.
    """
    preds = np.where(test_labels == IGNORE_LABEL_ID, IGNORE_LABEL_ID, test_preds)
    train = set(_row_keys(train_labels).tolist()) if len(train_labels) else set()
    in_train = lambda rows: np.fromiter((k in train for k in _row_keys(rows).tolist()), dtype=bool, count=len(rows))  # noqa: E731
    pred_in, label_in = in_train(preds), in_train(test_labels)
    wrong = ~exact_correct(test_preds, test_labels)
    share = lambda x: float(x.mean()) if x.size else float("nan")  # noqa: E731
    labels_covered = share(label_in)
    return {"test_labels_in_train": labels_covered, "preds_in_train": share(pred_in),
            "wrong_preds_in_train": share(pred_in[wrong]), "wrong": int(wrong.sum()),
            "baseline": share(label_in & ~wrong), "uninformative": bool(labels_covered >= COVERED)}


def accuracy_by(keys: Sequence, correct: np.ndarray) -> List[Tuple[object, int, float]]:
    """``[(key, examples, exact accuracy)]`` per distinct key, in sorted key order."""
    keys = np.asarray(keys)
    correct = np.asarray(correct, dtype=np.float64)
    out = []
    for k in np.unique(keys):
        sel = keys == k
        out.append((k.item() if hasattr(k, "item") else k, int(sel.sum()), float(correct[sel].mean())))
    return out


def halting_accuracy(trace: np.ndarray, labels: np.ndarray, steps: np.ndarray) -> Dict[str, object]:
    """From a trace ``[N, T, S]``: exact accuracy after each segment (``per_segment``, length T) and
    the accuracy when every example stops where its halt signal fires (``at_halt``)."""
    n, t, _ = trace.shape
    per_segment = np.array([exact_correct(trace[:, i], labels).mean() for i in range(t)]) if n else np.zeros(t)
    picked = trace[np.arange(n), np.clip(np.asarray(steps, dtype=np.int64) - 1, 0, t - 1)]
    return {"per_segment": per_segment, "at_halt": float(exact_correct(picked, labels).mean()) if n else float("nan")}


def detect_task(metadata: Dict[str, object], data_path: str, has_test_puzzles: bool) -> str:
    """``sudoku|maze|arc|domino|generic``: the ``task`` key of dataset.json when present, else a
    guess from shapes and the folder name (as puzzle_visualizer.html guesses)."""
    task = metadata.get("task")
    if isinstance(task, str) and task:
        return task
    seq_len, vocab = int(metadata["seq_len"]), int(metadata["vocab_size"])  # type: ignore[arg-type]
    name = data_path.rstrip("/").split("/")[-1].lower()
    side = int(round(seq_len ** 0.5))
    square = side * side == seq_len
    if seq_len == 72 and vocab == 8 or "domino" in name:
        return "domino"
    if has_test_puzzles or ("arc" in name and seq_len == 900):
        return "arc"
    if square and "maze" in name:
        return "maze"
    if square and ("sudoku" in name or vocab == side + 2):
        return "sudoku"
    if square and vocab == 6:
        return "maze"
    return "generic"


def breakdown_keys(task: str, inputs: np.ndarray, labels: np.ndarray,
                   identifiers: Optional[np.ndarray] = None, names: Optional[List[str]] = None) -> Optional[Tuple[str, np.ndarray]]:
    """``(what, key per example)`` for the task's breakdown, or None when the task has none.

    Sudoku: blanks to fill (the datasets store no rating); maze: path length (cells marked ``o``,
    token 5); domino: tiles on the table; ARC: the task name (identifier without augmentation suffix).
    """
    if task == "sudoku":
        return "blanks in the puzzle", (inputs == 1).sum(-1)
    if task == "maze":
        return "path length (cells)", (labels == 5).sum(-1)
    if task == "domino":
        table = inputs[:, :56].reshape(len(inputs), 28, 2)
        return "tiles on the table", (table != 0).any(-1).sum(-1)
    if task == "arc" and identifiers is not None and names is not None:
        from dataset.arc_grid import PUZZLE_ID_SEPARATOR
        base = [names[i].split(PUZZLE_ID_SEPARATOR)[0] if 0 <= i < len(names) else f"#{i}" for i in identifiers.tolist()]
        return "ARC task", np.array(base)
    return None
