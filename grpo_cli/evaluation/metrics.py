"""Pure accuracy math for `grpo eval`: pass@k, maj@k, standard errors. No I/O, no models.

Definitions (n = samples per problem, c = how many of them are correct):

- pass@k: the unbiased estimator of Chen et al. 2021 (Codex), the chance that at least one
  of k samples drawn without replacement from the n is correct:
      pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)
  The product form never builds a huge binomial, so it is exact enough for any n.
- maj@k: majority vote over the normalised extracted answers of the *first k* samples
  (not an expectation over subsets: simple, deterministic and cheap). Rules:
    * a sample with no extractable answer (None) never wins a vote over a real answer;
    * ties go to the tied answer that appeared first among the k samples.
  The problem counts as solved when the winning sample was graded correct.
- ks: k = 1, 2, 4, 8, ... (powers of two) up to n, plus n itself.
- Standard error of a mean over problems: sqrt(var / n_problems) with the population variance
  (ddof = 0), which for 0/1 scores is exactly sqrt(p (1 - p) / n). With several samples per
  problem the per-problem mean is the unit, so samples of one problem are not counted as
  independent draws.
- A paired difference (same problems in both reports) uses the SE of the per-problem
  differences; otherwise the two SEs add in quadrature: sqrt(se1^2 + se2^2).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Optional, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def ks_up_to(n: int) -> list[int]:
    """k = 1, 2, 4, ... (powers of two) up to n, plus n itself: [1, 2, 4, 5] for n = 5."""
    ks = [1 << j for j in range(n.bit_length()) if 1 << j <= n]
    if ks[-1] != n:
        ks.append(n)
    return ks


def majority_vote(keys: Sequence[Optional[str]]) -> Optional[int]:
    """Index of the sample whose answer wins the vote, or None when no sample has an answer.

    `keys` are normalised answers (None = nothing extracted). None never wins; among answers
    with the same count, the one that appeared first wins, and the index returned is that
    answer's first occurrence.
    """
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    best = max(counts.values())
    for i, key in enumerate(keys):
        if key is not None and counts[key] == best:
            return i
    return None  # unreachable


def maj_at_k(keys: Sequence[Optional[str]], correct: Sequence[bool], k: int) -> bool:
    """Majority vote over the first k samples; True when the winning sample is correct."""
    winner = majority_vote(keys[:k])
    return winner is not None and bool(correct[winner])


_LATEX_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def normalize_answer(answer: Optional[str]) -> Optional[str]:
    """A vote key: the answer with spacing, `$`, `\\left/\\right`, text wrappers, thousands
    separators and a trailing period removed, so that '1,000.' and '$1000$' vote together.
    Deliberately conservative: answers equal only after algebra are graded, not merged."""
    if answer is None:
        return None
    s = _LATEX_WRAPPERS.sub(r"\1", answer.strip())
    s = s.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("$", "")
    s = s.replace("dfrac", "frac").replace("tfrac", "frac")
    s = _THOUSANDS.sub("", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    if re.fullmatch(r"-?\d+\.0*", s):  # '18.00' -> '18'
        s = s.split(".")[0]
    return s or None


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def standard_error(values: Sequence[float]) -> float:
    """SE of the mean of per-problem scores: sqrt(population variance / n)."""
    n = len(values)
    if n == 0:
        return float("nan")
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / n / n)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(mean of b - a, its SE) over the same problems, in the same order."""
    if len(a) != len(b):
        raise ValueError("paired_difference needs per-problem scores of equal length")
    diffs = [y - x for x, y in zip(a, b)]
    return mean(diffs), standard_error(diffs)


def unpaired_se(se_a: float, se_b: float) -> float:
    """SE of the difference of two independent means."""
    return math.sqrt(se_a ** 2 + se_b ** 2)
