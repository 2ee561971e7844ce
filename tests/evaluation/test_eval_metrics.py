"""Hand-computed checks of grpo_cli.evaluation.metrics (pass@k, maj@k, standard errors)."""

import math
from fractions import Fraction

import pytest

from grpo_cli.evaluation.metrics import (
    ks_up_to,
    maj_at_k,
    majority_vote,
    normalize_answer,
    paired_difference,
    pass_at_k,
    standard_error,
    unpaired_se,
)


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 1, 0.4),            # c / n
    (5, 2, 2, 0.7),            # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (5, 2, 3, 0.9),            # 1 - C(3,3)/C(5,3) = 1 - 1/10
    (5, 2, 4, 1.0),            # n - c = 3 < k: every 4-subset holds a correct one
    (4, 0, 2, 0.0),            # nothing correct
    (4, 4, 1, 1.0),            # everything correct
    (1, 1, 1, 1.0),            # greedy, correct
    (1, 0, 1, 0.0),            # greedy, wrong
    (10, 3, 5, 1 - 21 / 252),  # C(7,5) = 21, C(10,5) = 252
])
def test_pass_at_k_hand_cases(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_for_large_n() -> None:
    # C(1000, 10) ~ 2.6e23: the product form stays accurate where floats of binomials would not.
    exact = 1 - Fraction(math.comb(500, 10), math.comb(1000, 10))
    assert pass_at_k(1000, 500, 10) == pytest.approx(float(exact), rel=1e-12)
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001)


def test_pass_at_k_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_ks_are_powers_of_two_plus_n() -> None:
    assert ks_up_to(1) == [1]
    assert ks_up_to(4) == [1, 2, 4]
    assert ks_up_to(5) == [1, 2, 4, 5]
    assert ks_up_to(16) == [1, 2, 4, 8, 16]


def test_majority_vote_most_common_wins() -> None:
    assert majority_vote(["3", "5", "5"]) == 1  # '5' twice; its first occurrence is index 1


def test_majority_vote_tie_goes_to_first_seen() -> None:
    # '5' and '7' both twice: '5' appeared first (index 0).
    assert majority_vote(["5", "7", "7", "5"]) == 0
    assert majority_vote(["7", "5", "5", "7"]) == 0
    # Three-way tie of singletons: the first sample.
    assert majority_vote(["a", "b", "c"]) == 0


def test_none_never_wins_the_vote() -> None:
    assert majority_vote([None, None, None, "3"]) == 3  # one real answer beats three None
    assert majority_vote([None, "2", None, "4"]) == 1  # tie of real answers: first one
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None


def test_maj_at_k_uses_the_first_k_samples() -> None:
    keys = ["5", "7", "7", "5", "7"]
    correct = [False, True, True, False, True]  # gold is 7
    assert maj_at_k(keys, correct, 1) is False  # ['5']
    assert maj_at_k(keys, correct, 2) is False  # ['5','7'] tie -> '5'
    assert maj_at_k(keys, correct, 3) is True  # '7' x2
    assert maj_at_k(keys, correct, 4) is False  # 2-2 tie -> '5' (seen first)
    assert maj_at_k(keys, correct, 5) is True  # '7' x3
    assert maj_at_k([None, None], [False, False], 2) is False


def test_normalize_answer_merges_spellings() -> None:
    assert normalize_answer("1,000.") == normalize_answer("$1000$") == "1000"
    assert normalize_answer("18.00") == "18"
    assert normalize_answer("\\dfrac{1}{2}") == normalize_answer("\\frac{1}{2}")
    assert normalize_answer("5 \\text{cm}") == "5cm"
    assert normalize_answer("  ") is None
    assert normalize_answer(None) is None


def test_standard_error_of_binary_scores_is_sqrt_pq_over_n() -> None:
    # p = 0.25, n = 4: sqrt(0.25 * 0.75 / 4) = sqrt(0.046875)
    assert standard_error([1, 0, 0, 0]) == pytest.approx(math.sqrt(0.25 * 0.75 / 4))
    assert standard_error([1, 1]) == 0.0
    assert math.isnan(standard_error([]))


def test_paired_and_unpaired_differences() -> None:
    # diffs b - a = [0, 1, 0, 0]: mean 0.25, population var 0.1875, SE sqrt(0.1875 / 4)
    diff, se = paired_difference([1, 0, 1, 0], [1, 1, 1, 0])
    assert diff == pytest.approx(0.25)
    assert se == pytest.approx(math.sqrt(0.1875 / 4))
    assert unpaired_se(0.3, 0.4) == pytest.approx(0.5)
