"""The graders on the real benchmark files: every gold solution grades correct against its own
answer, and almost never against a neighbour's (solution i vs answer i+1).

Run with `pytest -s` to see the rates. Symbolic checks are the slow part (tens of ms each on a
mismatch), so the MATH shifted pairing uses the first rows in the fast test and more in `slow`.
"""

import json
from pathlib import Path
from typing import Dict, List

import pytest

from grpo_cli.rewards.builtin import correctness
from grpo_cli.rewards.extract import final_boxed, hash_answer

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _load(*relative: str) -> List[Dict]:
    paths = [DATA / r for r in relative]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"data files not found: {missing}")
    return [json.loads(line) for p in paths for line in p.open()]


def _grade(solutions: List[str], answers: List[str], answer_format: str,
           mode: str = "strict") -> float:
    """Share of solutions graded correct against `answers` (a rate in [0, 1])."""
    n = len(solutions)
    rewards = correctness([""] * n, solutions, answers, mode=mode, answer_format=answer_format,
                          symbolic_timeout_s=10.0)
    return sum(r == 1.0 for r in rewards) / n


def _shift(values: List[str]) -> List[str]:
    return values[1:] + values[:1]


def test_gsm8k_gold_solutions():
    rows = _load("gsm8k/train.jsonl", "gsm8k/test.jsonl")
    assert len(rows) == 8792
    solutions = [r["answer"] for r in rows]
    gold = [hash_answer(s) for s in solutions]
    assert all(g is not None for g in gold)
    for mode in ("strict", "flexible"):
        rate = _grade(solutions, gold, "hash", mode)
        print(f"\ngsm8k {mode}: solution i vs its answer: {rate:.4f}")
        assert rate == 1.0
    shifted = _grade(solutions, _shift(gold), "hash")
    print(f"gsm8k: solution i vs answer i+1: {shifted:.4f}")
    assert shifted < 0.03  # neighbours share an answer now and then


def test_math500_gold_solutions():
    rows = _load("math500/test.jsonl")
    solutions, answers = [r["solution"] for r in rows], [r["answer"] for r in rows]
    rate = _grade(solutions, answers, "boxed")
    print(f"\nmath500: solution i vs its answer: {rate:.4f}")
    assert rate >= 0.99
    shifted = _grade(solutions, _shift(answers), "boxed")
    print(f"math500: solution i vs answer i+1: {shifted:.4f}")
    assert shifted < 0.03


def _math_boxed():
    rows = _load("math/train.jsonl", "math/test.jsonl")
    solutions = [r["solution"] for r in rows]
    boxed = [final_boxed(s) for s in solutions]  # as the MATH adapter reads its golds
    found = sum(bool(b) for b in boxed) / len(rows)
    kept = [(s, b) for s, b in zip(solutions, boxed) if b]  # two solutions box nothing: \boxed{}
    return found, [s for s, _ in kept], [b for _, b in kept]


def test_math_boxed_answers():
    found, solutions, boxed = _math_boxed()
    print(f"\nmath: solutions with a non-empty \\boxed{{}}: {found:.4f} of {12500}")
    assert found >= 0.999
    rate = _grade(solutions, boxed, "boxed")
    print(f"math: solution i vs boxed(i): {rate:.4f}")
    assert rate == 1.0
    n = 300
    shifted = _grade(solutions[:n], _shift(boxed)[:n], "boxed")
    print(f"math: solution i vs boxed(i+1), first {n}: {shifted:.4f}")
    assert shifted < 0.03


@pytest.mark.slow
def test_math_boxed_answers_shifted_more_rows():
    _, solutions, boxed = _math_boxed()
    n = 3000
    shifted = _grade(solutions[:n], _shift(boxed)[:n], "boxed")
    print(f"\nmath: solution i vs boxed(i+1), first {n}: {shifted:.4f}")
    assert shifted < 0.03
