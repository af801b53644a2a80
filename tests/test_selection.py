"""inference/selection.py: majority vote (ties by summed halting confidence), the most confident
sample, and the metric sums of test-time scaling."""
import numpy as np
import pytest

from inference.selection import IGNORE_LABEL_ID, answer_keys, choose, curve_sizes, scaling_sums


def answers_of(*rows):
    return np.array([[[int(c) for c in r] for r in rows]])


def test_vote_takes_the_majority_and_breaks_ties_by_summed_confidence():
    a = answers_of("12", "34", "12", "34", "56")
    q = np.array([[0.1, 0.5, 0.2, 0.4, 0.99]])
    chosen, agreement = choose(answer_keys(a), q, "vote")
    assert chosen[0] == 1 and agreement[0] == pytest.approx(0.4)  # 34 (0.9) beats 12 (0.3); 56 is alone
    chosen, agreement = choose(answer_keys(a), q, "q_halt")
    assert chosen[0] == 4 and agreement[0] == pytest.approx(0.2)
    a = answers_of("12", "34", "12")
    assert choose(answer_keys(a), np.array([[0.1, 0.9, 0.1]]), "vote")[0][0] == 0  # 2 votes beat confidence
    assert choose(answer_keys(a[:, :1]), np.array([[0.3]]), "vote")[0][0] == 0  # one sample: itself
    with pytest.raises(ValueError, match="select must be one of vote, q_halt"):
        choose(answer_keys(a), np.zeros((1, 3)), "best")


def test_scaling_sums_count_like_the_loss_head():
    answers = np.array([[[1, 2, 3], [1, 2, 4], [1, 2, 4]],  # right only in sample 0; the vote picks 124
                        [[5, 6, 7], [5, 6, 7], [0, 0, 0]],  # right by vote
                        [[9, 9, 9], [9, 9, 9], [9, 9, 9]]])  # a padding row: no scored label
    labels = np.array([[1, 2, 3], [5, 6, IGNORE_LABEL_ID], [IGNORE_LABEL_ID] * 3])
    q = np.array([[0.2, 0.3, 0.4], [0.5, 0.5, 0.9], [0.9, 0.9, 0.9]])
    sums = scaling_sums(answers, q, labels, "vote", curve=curve_sizes(3))
    assert sums["count"] == 2
    assert sums["exact_accuracy"] == 1 and sums["pass@3"] == 2 and sums["first_sample_exact_accuracy"] == 2
    assert sums["accuracy"] == pytest.approx(2 / 3 + 1)
    assert sums["agreement"] == pytest.approx(2 / 3 + 2 / 3)
    assert sums["exact_accuracy_vote@1"] == 2 and sums["exact_accuracy_vote@3"] == 1
    assert sums["exact_accuracy_q_halt@2"] == 1 and sums["exact_accuracy_q_halt@3"] == 0
    assert curve_sizes(16) == (1, 2, 4, 8, 16) and curve_sizes(20) == (1, 2, 4, 8, 16, 20) and curve_sizes(3) == (1, 2, 3)
