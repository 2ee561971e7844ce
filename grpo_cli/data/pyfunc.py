"""Synthetic function-writing problems with generated tests: the code task's offline demo.

Each problem is one family with its parameters, e.g. "Write a Python function `add_7(x)` that
returns x plus 7." Its reference solution is a one-line function (written here, trusted: it is
executed in this process to compute the expected values); the tests are `num_tests` asserts
on inputs drawn from a seeded generator, and the prompt shows one more example call. As
`data=arith` is for math: small enough that SmolLM2-135M-Instruct solves some of them (its
base pass rate is measured in the README), with room to learn the format and the families.

Problems are distinct (family, parameters); the set is fixed, so `num_examples` larger than
the number of distinct problems returns them all (logged). Ids are `pyfunc/<name>`.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from grpo_cli.config.schema import PyFuncConfig

log = logging.getLogger("grpo")
Draw = Callable[[random.Random], tuple]


@dataclass(frozen=True)
class Family:
    name: str  # function name, formatted with the parameters
    args: str  # parameter list
    doc: str  # what it returns, formatted with the parameters
    body: str  # the reference expression, formatted with the parameters
    params: Callable[[], Iterable[dict[str, Any]]]
    draw: Draw  # one input tuple


def _ints(lo: int, hi: int) -> Draw:
    return lambda rng: (rng.randint(lo, hi),)


def _int_list(rng: random.Random) -> tuple:
    return ([rng.randint(0, 20) for _ in range(rng.randint(5, 8))],)


def _word(rng: random.Random) -> tuple:
    return ("".join(rng.choice("abcdeilmnorst") for _ in range(rng.randint(3, 9))),)


EASY = [
    Family("add_{k}", "x", "x plus {k}", "x + {k}", lambda: ({"k": k} for k in range(1, 31)),
           _ints(-20, 50)),
    Family("subtract_{k}", "x", "x minus {k}", "x - {k}",
           lambda: ({"k": k} for k in range(1, 31)), _ints(-20, 50)),
    Family("times_{k}", "x", "x multiplied by {k}", "x * {k}",
           lambda: ({"k": k} for k in range(2, 13)), _ints(-10, 30)),
    Family("linear_{a}_{b}", "x", "{a} times x plus {b}", "{a} * x + {b}",
           lambda: ({"a": a, "b": b} for a in range(2, 8) for b in range(1, 10)),
           _ints(-10, 20)),
    Family("divisible_by_{k}", "x", "True if x is divisible by {k}, else False",
           "x % {k} == 0", lambda: ({"k": k} for k in range(2, 13)), _ints(0, 100)),
    Family("count_above_{k}", "xs", "how many numbers in the list xs are greater than {k}",
           "sum(1 for v in xs if v > {k})", lambda: ({"k": k} for k in range(0, 21)),
           _int_list),
    Family("item_{k}", "xs", "the element at index {k} of the list xs", "xs[{k}]",
           lambda: ({"k": k} for k in range(0, 5)), _int_list),
    Family("repeat_{k}", "s", "the string s repeated {k} times", "s * {k}",
           lambda: ({"k": k} for k in range(2, 7)), _word),
    Family("starts_with_{c}", "s", "True if the string s starts with '{c}', else False",
           "s.startswith('{c}')", lambda: ({"c": c} for c in "abcdeilmnorst"), _word),
]
# SmolLM2-135M-Instruct solved 17 of 24 held-out problems of the first set above (all the
# literal arithmetic ones) but few of these: the default task (README "Code tasks").
HARD = [
    Family("max_plus_{k}", "xs", "the largest number in the list xs plus {k}",
           "max(xs) + {k}", lambda: ({"k": k} for k in range(0, 11)), _int_list),
    Family("count_{c}", "s", "how many times the letter '{c}' appears in the string s",
           "s.count('{c}')", lambda: ({"c": c} for c in "abcdeilmnorst"), _word),
    Family("clamp_{lo}_{hi}", "x", "x limited to the range {lo} to {hi} (inclusive)",
           "min(max(x, {lo}), {hi})",
           lambda: ({"lo": lo, "hi": lo + w} for lo in range(0, 6) for w in range(5, 16, 2)),
           _ints(-10, 30)),
    Family("sum_divisible_by_{k}", "xs", "the sum of the numbers in the list xs that are "
           "divisible by {k}", "sum(v for v in xs if v % {k} == 0)",
           lambda: ({"k": k} for k in range(2, 10)), _int_list),
    Family("keep_above_{k}", "xs", "a list of the numbers in xs that are greater than {k}, "
           "in their original order", "[v for v in xs if v > {k}]",
           lambda: ({"k": k} for k in range(0, 16)), _int_list),
    Family("remove_{c}", "s", "the string s with every '{c}' removed", "s.replace('{c}', '')",
           lambda: ({"c": c} for c in "abcdeilmnorst"), _word),
    Family("digit_sum_plus_{k}", "x", "the sum of the decimal digits of x, plus {k}",
           "sum(int(d) for d in str(x)) + {k}", lambda: ({"k": k} for k in range(0, 10)),
           _ints(10, 9999)),
    Family("plus_{a}_times_{b}", "x", "x plus {a}, the result multiplied by {b}",
           "(x + {a}) * {b}", lambda: ({"a": a, "b": b} for a in range(1, 7)
                                       for b in range(2, 6)), _ints(-10, 20)),
    Family("count_multiples_of_{k}", "xs", "how many numbers in the list xs are multiples of "
           "{k}", "sum(1 for v in xs if v % {k} == 0)",
           lambda: ({"k": k} for k in range(2, 10)), _int_list),
    Family("last_{k}_reversed", "xs", "the last {k} elements of the list xs, in reverse order",
           "xs[-{k}:][::-1]", lambda: ({"k": k} for k in range(1, 5)), _int_list),
    Family("stretch_{k}", "s", "the string s with each character repeated {k} times",
           "''.join(ch * {k} for ch in s)", lambda: ({"k": k} for k in range(2, 5)), _word),
    Family("min_times_{k}", "xs", "the smallest number in the list xs multiplied by {k}",
           "min(xs) * {k}", lambda: ({"k": k} for k in range(2, 10)), _int_list),
]
LEVELS = {"easy": EASY, "hard": HARD, "all": EASY + HARD}


def _call(name: str, args: tuple) -> str:
    return f"{name}({', '.join(map(repr, args))})"


def _problem(fam: Family, p: dict[str, Any], rng: random.Random, num_tests: int) -> dict:
    name = fam.name.format(**p)
    solution = f"def {name}({fam.args}):\n    return {fam.body.format(**p)}\n"
    ref: dict[str, Any] = {}
    exec(compile(solution, "<reference>", "exec"), ref)  # our own code, not the model's
    inputs: list[tuple] = []
    for _ in range(100 * (num_tests + 1)):  # distinct inputs where the family has them
        args = fam.draw(rng)
        if args not in inputs:
            inputs.append(args)
        if len(inputs) == num_tests + 1:
            break
    example, tests = inputs[0], inputs[1:]
    doc = fam.doc.format(**p)
    shown = f"`{_call(name, example)}` returns `{ref[name](*example)!r}`"
    return {
        "name": name,
        "family": fam.name.split("_{")[0],
        "question": f"Write a Python function `{name}({fam.args})` that returns {doc}. "
                    f"For example, {shown}.",
        "prompt_code": f'def {name}({fam.args}):\n    """Return {doc}.\n\n    >>> '
                       f'{_call(name, example)}\n    {ref[name](*example)!r}\n    """\n',
        "solution": solution,
        "tests": [f"assert {_call(name, a)} == {ref[name](*a)!r}" for a in tests],
    }


def generate(cfg: PyFuncConfig, seed: int) -> list[dict]:
    """Up to `num_examples` distinct problems in a seeded order; a problem's tests do not
    depend on the seed, so a held-out problem is graded alike in every run."""
    rng = random.Random(seed)
    problems = [_problem(fam, p, random.Random(f"{fam.name}/{sorted(p.items())}"),
                         cfg.num_tests)
                for fam in LEVELS[cfg.level] for p in fam.params()]
    rng.shuffle(problems)
    if cfg.num_examples > len(problems):
        log.info("data: pyfunc has %d distinct problems (data.pyfunc.num_examples=%d)",
                 len(problems), cfg.num_examples)
    return problems[:cfg.num_examples]


__all__ = ["EASY", "HARD", "LEVELS", "generate"]
