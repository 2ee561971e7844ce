"""Answer normalisation, numeric and symbolic equivalence, and the timed process pool."""

import time

import pytest

from grpo_cli.rewards import answers_match
from grpo_cli.rewards.equivalence import _as_latex, answers_match_many, cheap_match
from grpo_cli.rewards.normalize import normalize_answer, to_number
from grpo_cli.rewards.procpool import TimedProcessPool


@pytest.mark.parametrize("raw, norm, number", [
    ("$18.00", "18", 18.0),
    (r"\$1,000 dollars", "1000", 1000.0),
    ("x = 5", "5", 5.0),
    (r"90^\circ", "90", 90.0),
    (r"\dfrac{3}{4}", r"\frac{3}{4}", 0.75),
    (r"-\frac12", r"-\frac12", -0.5),
    ("3/4", "3/4", 0.75),
    (r"5\text{ cm}", "5", 5.0),
    ("18 eggs.", "18", 18.0),
    (r"50\%", "50", 50.0),
    (r"10{,}000", "10000", 10000.0),
    ("7.000", "7", 7.0),
    ("2xy", "2xy", None),            # not a unit: left alone
    ("2 pi", "2pi", None),
    ("(1, 200)", "(1,200)", None),   # a tuple keeps its comma
    ("1,2", "1,2", None),
])
def test_normalize_and_to_number(raw, norm, number):
    assert normalize_answer(raw) == norm
    assert to_number(raw) == number


MATCH = [
    (r"\frac{1}{2}", "0.5"),
    ("1,000", "1000"),
    (r"\$18.00", "18"),
    ("$18.00", "18"),
    ("x=5", "5"),
    ("(1, 2]", "(1,2]"),
    ("18.0", "18"),
    ("0.333333", r"\frac{1}{3}"),
    (r"\sqrt{2}/2", r"\frac{\sqrt2}{2}"),   # symbolic
    (r"\left( 3, \frac{\pi}{2} \right)", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"(3,\tfrac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"x \in (-\infty, 1)", r"(-\infty,1)"),  # symbolic
]
NO_MATCH = [
    ("18", "180"),
    ("0.5", "5"),
    ("[1,2]", "(1,2)"),   # symbolic: closed vs open interval
    ("(1,2)", "(2,1)"),
    ("17.5", "18"),
    (r"\sqrt{3}", r"\sqrt{2}"),
    (None, "5"),
    ("", "5"),
    ("eggs", "5"),
    (r"13,\text{(E)}", "13"),          # a hedge: the set is not its first element
]


@pytest.mark.parametrize("pred, gold", MATCH)
def test_equivalent(pred, gold):
    assert answers_match(pred, gold, timeout_s=30.0)


@pytest.mark.parametrize("pred, gold", NO_MATCH)
def test_not_equivalent(pred, gold):
    assert not answers_match(pred, gold, timeout_s=30.0)


@pytest.mark.parametrize("answer, latex", [
    ("1,-2", "$1,-2$"),                                   # plain numbers: one environment
    (r"13,\text{(E)}", r"$13$, $\text{(E)}$"),            # a set holding text: one each
    ("(2,2),(6,2)", "$(2,2)$, $(6,2)$"),
    ("(1,2]", "$(1,2]$"),                                 # the comma is inside the brackets
    ("$x$", "$x$"),
])
def test_answers_are_handed_to_math_verify_whole(answer, latex):
    assert _as_latex(answer) == latex


def test_numbers_are_decided_in_process_and_fast():
    assert cheap_match("18", "180") is False
    assert cheap_match("1,000", "1000") is True
    assert cheap_match(r"\sqrt{2}/2", r"\frac{\sqrt2}{2}") is None  # needs symbolic
    preds, golds = [str(i) for i in range(64)], [str(i % 8) for i in range(64)]
    start = time.perf_counter()
    matches = answers_match_many(preds, golds, timeout_s=3.0)
    assert time.perf_counter() - start < 0.5  # milliseconds in practice; no process involved
    assert sum(matches) == 8


def test_pathological_symbolic_check_is_killed():
    # sympy would take ages on this power tower: the worker is killed at the time limit
    start = time.perf_counter()
    assert not answers_match(r"9^{9^{9^{9}}}", "7", timeout_s=1.0)
    assert time.perf_counter() - start < 30  # 1 s limit + at most a worker start-up
    assert answers_match(r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2", timeout_s=30.0)  # still works


def test_process_pool_kills_a_hung_call_and_recovers():
    pool = TimedProcessPool(size=2)
    try:
        outcomes = pool.map("time:sleep", [(30,), (0,)], timeout_s=1.0)
        assert [o.status for o in outcomes] == ["timeout", "ok"]
        assert pool.restarts == 1
        assert pool.call("math:sqrt", (16.0,), timeout_s=30.0).value == 4.0
        failed = pool.call("math:sqrt", (-1.0,), timeout_s=30.0)
        assert failed.status == "error" and "ValueError" in failed.value
        crashed = pool.call("os:_exit", (3,), timeout_s=30.0)  # a worker dying is an error
        assert crashed.status == "error"
        assert pool.call("math:sqrt", (9.0,), timeout_s=30.0).value == 3.0
    finally:
        pool.close()
