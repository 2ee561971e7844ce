"""The keep rules and the summary of `grpo sample` on hand-made scores."""

from __future__ import annotations

import pytest

from grpo_cli.sample.keep import KeepRule, Scored, format_summary, select, summarize


def s(index: int, total: float, text: str | None = None, correct: bool | None = None) -> Scored:
    return Scored(index, text or f"text {index}", total, {"r": total}, correct, 5, False)


SAMPLES = [s(0, 0.5, correct=False), s(1, 1.1, "same", True), s(2, 1.1, " same ", True),
           s(3, 0.9, correct=True), s(4, 1.1, "other", True)]


@pytest.mark.parametrize("rule,expected", [
    # correct: 1, 2, 3, 4 qualify; highest total first, sample order breaks ties.
    (KeepRule("correct", None, 10, False), [1, 2, 4, 3]),
    # dedupe: " same " is "same" with whitespace collapsed -> 2 is skipped.
    (KeepRule("correct", None, 10, True), [1, 4, 3]),
    # max_per_problem=2 keeps the two highest.
    (KeepRule("correct", None, 2, False), [1, 2]),
    # best: only the ties at 1.1.
    (KeepRule("best", None, 10, False), [1, 2, 4]),
    (KeepRule("best", None, 10, True), [1, 4]),
    # threshold 0.9 (inclusive): 1, 2, 4 at 1.1, then 3 at 0.9; 0 (0.5) is out.
    (KeepRule("threshold", 0.9, 10, False), [1, 2, 4, 3]),
    (KeepRule("threshold", 2.0, 10, False), []),
])
def test_select(rule, expected):
    assert [k.index for k in select(SAMPLES, rule)] == expected


def test_dedupe_fills_up_to_the_limit_past_a_duplicate():
    # 2 duplicates 1: with max_per_problem=2 the second kept is 4, not nothing.
    assert [k.index for k in select(SAMPLES, KeepRule("correct", None, 2, True))] == [1, 4]


def test_correct_keeps_nothing_without_verdicts():
    assert select([s(0, 1.0), s(1, 2.0)], KeepRule("correct", None, 4, False)) == []


def test_summary_counts_and_distribution():
    done = [{"totals": [0.0, 1.0, 2.0, 3.0], "correct": [False, True, None, True],
             "kept_totals": [3.0, 2.0]},
            {"totals": [0.0, 0.0], "correct": [False, False], "kept_totals": []},
            {"totals": [4.0], "correct": [True], "kept_totals": [4.0]}]
    summary = summarize(done)
    assert summary["problems"] == 3 and summary["problems_with_kept"] == 2
    assert summary["kept"] == 3 and summary["samples"] == 7
    assert summary["kept_per_problem"] == {"0": 1, "1": 1, "2": 1}
    assert summary["correct_rate"] == pytest.approx(3 / 6)  # None is no verdict
    all_ = summary["reward_all"]  # sorted: 0 0 0 1 2 3 4
    assert (all_["count"], all_["min"], all_["max"]) == (7, 0.0, 4.0)
    assert all_["mean"] == pytest.approx(10 / 7)
    assert all_["p50"] == 1.0  # nearest rank: index int(0.5 * 7) = 3
    assert summary["reward_kept"]["mean"] == pytest.approx(3.0)
    text = format_summary(summary)
    assert "with >= 1 kept: 2" in text and "kept: 3 of 7 samples (correct: 50.0%)" in text
