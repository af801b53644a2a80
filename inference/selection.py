"""One answer from many samples of a puzzle, and the numbers of test-time scaling.

Every puzzle has ``K`` sampled answers, already mapped back to its own frame, and the halting
confidence (sigmoid of the last segment's ``q_halt`` logit) of each. ``select=vote`` takes the
answer most samples gave, ties broken by the summed confidence of its voters (then the earliest
sample); ``select=q_halt`` takes the single sample the halting head is most confident in. The
scores of the first ``n`` samples give the accuracy-against-samples curve at no extra cost.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from tasks.views import row_keys

SELECTS = ("vote", "q_halt")
IGNORE_LABEL_ID = -100  # as models.losses: label positions that are not scored

# Sample counts of the accuracy curve (the largest asked is added).
CURVE_SIZES = (1, 2, 4, 8, 16)


def answer_keys(answers: np.ndarray) -> np.ndarray:
    """A 64-bit key per answer ``[B, K, L] -> [B, K]``: equal answers, equal keys (collisions ~2^-64)."""
    b, k, length = answers.shape
    return row_keys(answers.reshape(b * k, length), seed=0).reshape(b, k)


def choose(keys: np.ndarray, q_halt: np.ndarray, select: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(chosen sample [B], agreement [B])`` among the ``K`` samples of each of ``B`` puzzles.

    ``keys`` ``[B, K]`` identify the answers (:func:`answer_keys`), ``q_halt`` ``[B, K]`` the
    halting confidence of each. Agreement: the share of samples that gave the chosen answer.
    """
    if select not in SELECTS:
        raise ValueError(f"select must be one of {', '.join(SELECTS)}, got {select!r}")
    num = keys.shape[1]
    same = keys[:, :, None] == keys[:, None, :]  # [B, K, K]
    votes = same.sum(axis=2)
    if select == "vote":
        q_sum = (same * q_halt[:, None, :]).sum(axis=2)  # < votes + 1, so the sum only breaks ties
        chosen = np.argmax(votes * (num + 1.0) + q_sum, axis=1)
    else:
        chosen = np.argmax(q_halt, axis=1)
    return chosen, votes[np.arange(len(chosen)), chosen] / num


def correctness(answers: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(exact [B, K], token accuracy [B, K], scored [B])`` of every sample against ``labels`` ``[B, L]``.

    As the loss head counts: positions labelled ``IGNORE_LABEL_ID`` are not scored, and a puzzle
    with no scored position (a padding row) is not counted at all.
    """
    mask = labels != IGNORE_LABEL_ID
    counts = mask.sum(axis=1)
    right = (answers == labels[:, None, :]) & mask[:, None, :]
    hits = right.sum(axis=2)
    return hits == counts[:, None], hits / np.maximum(counts, 1)[:, None], counts > 0


def scaling_sums(answers: np.ndarray, q_halt: np.ndarray, labels: np.ndarray, select: str,
                 curve: Sequence[int] = ()) -> Dict[str, float]:
    """Metric sums over the scored puzzles of one batch (divide by ``count``).

    ``exact_accuracy`` / ``accuracy`` of the chosen answer, ``pass@K`` (some sample right),
    ``agreement``, ``first_sample_exact_accuracy`` (sample 0 alone: one plain pass), and for each
    ``n`` in ``curve`` the exact accuracy of ``vote`` and ``q_halt`` over the first ``n`` samples
    (``exact_accuracy_vote@n``, ``exact_accuracy_q_halt@n``).
    """
    exact, tokens, scored = correctness(answers, labels)
    keys = answer_keys(answers)
    rows = np.arange(len(keys))
    chosen, agreement = choose(keys, q_halt, select)
    k = answers.shape[1]
    sums = {"count": scored.sum(),
            "exact_accuracy": (exact[rows, chosen] & scored).sum(),
            "accuracy": np.where(scored, tokens[rows, chosen], 0).sum(),
            f"pass@{k}": (exact.any(axis=1) & scored).sum(),
            "agreement": np.where(scored, agreement, 0).sum(),
            "first_sample_exact_accuracy": (exact[:, 0] & scored).sum()}
    for n in curve:
        for how in SELECTS:
            picked, _ = choose(keys[:, :n], q_halt[:, :n], how)
            sums[f"exact_accuracy_{how}@{n}"] = (exact[rows, picked] & scored).sum()
    return {name: float(v) for name, v in sums.items()}


def curve_sizes(samples: int) -> Tuple[int, ...]:
    """The sample counts of the curve: 1, 2, 4, 8, 16 up to ``samples``, and ``samples`` itself."""
    return tuple(sorted({n for n in CURVE_SIZES if n <= samples} | {samples}))


__all__ = ["CURVE_SIZES", "SELECTS", "answer_keys", "choose", "correctness", "curve_sizes", "scaling_sums"]
