"""Synthetic arithmetic word problems, generated deterministically from a seed.

Each problem is a chain of ``num_ops`` integer operations on operands drawn from
``[min_value, max_value]``, evaluated left to right (the question shows parentheses wherever
standard precedence would disagree, so ``(3 + 4) * 2`` means what it says). Results are
exact integers:

- ``-``: with a non-negative ``min_value`` the result never goes below 0
  ("Tom has 7 apples and gives 5 away" never runs out of apples);
- ``*``: the multiplier is at most 12 and the product at most 1000 in magnitude;
- ``/``: only exact divisions (the divisor divides the running value, never 0).

Problems are distinct: a repeated expression is drawn again, so a held-out problem never
appears in training under another phrasing. When the settings allow fewer distinct problems
than ``num_examples`` (0..20 with + and - has 672), the generator returns them all and logs it.
"""

from __future__ import annotations

import logging
import random
from typing import Callable, Optional

from grpo_cli.config.schema import ArithConfig
from grpo_cli.errors import UserError

log = logging.getLogger("grpo")

MUL_MAX_OPERAND = 12
MUL_MAX_RESULT = 1000

SYMBOLIC = ["What is {expr}?", "Calculate {expr}.", "Compute {expr}.",
            "What is the value of {expr}?"]
WORD: dict[str, list[str]] = {
    "+": ["{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?",
          "There are {a} {item} in a box. {name} puts {b} more in. "
          "How many {item} are in the box now?"],
    "-": ["{name} has {a} {item} and gives {b} away. How many {item} does {name} have left?",
          "There are {a} {item} on a table. {name} takes {b} of them. "
          "How many {item} are left on the table?"],
    "*": ["{name} has {a} bags with {b} {item} in each bag. How many {item} does {name} have?",
          "There are {a} rows of {item} with {b} {item} in each row. "
          "How many {item} are there in all?"],
    "/": ["{name} shares {a} {item} equally among {b} friends. "
          "How many {item} does each friend get?",
          "{name} puts {a} {item} into {b} boxes, the same number in each box. "
          "How many {item} go in each box?"],
}
NAMES = ["Tom", "Anna", "Sam", "Mia", "Leo", "Zoe", "Ben", "Lily"]
ITEMS = ["apples", "marbles", "stickers", "books", "coins", "pencils", "cookies", "shells"]


def _draw_add(rng: random.Random, acc: int, lo: int, hi: int) -> Optional[int]:
    return rng.randint(lo, hi)


def _draw_sub(rng: random.Random, acc: int, lo: int, hi: int) -> Optional[int]:
    top = min(hi, acc) if lo >= 0 else hi
    return rng.randint(lo, top) if top >= lo else None


def _draw_mul(rng: random.Random, acc: int, lo: int, hi: int) -> Optional[int]:
    top = min(hi, MUL_MAX_OPERAND, MUL_MAX_RESULT // max(1, abs(acc)))
    bottom = max(lo, -top)
    return rng.randint(bottom, top) if top >= bottom else None


def _draw_div(rng: random.Random, acc: int, lo: int, hi: int) -> Optional[int]:
    divisors = [b for b in range(lo, hi + 1) if b != 0 and acc % b == 0]
    return rng.choice(divisors) if divisors else None


# op -> (draw the right operand given the running value or None, apply it exactly)
OPS: dict[str, tuple[Callable[[random.Random, int, int, int], Optional[int]],
                     Callable[[int, int], int]]] = {
    "+": (_draw_add, lambda x, y: x + y),
    "-": (_draw_sub, lambda x, y: x - y),
    "*": (_draw_mul, lambda x, y: x * y),
    "/": (_draw_div, lambda x, y: x // y),
}


def _fmt(n: int) -> str:
    return str(n) if n >= 0 else f"({n})"


def check_config(cfg: ArithConfig) -> None:
    """Raise UserError for settings that cannot produce problems."""
    if not cfg.operators:
        raise UserError("data.arith.operators is empty; choose from: " + ", ".join(OPS))
    for op in cfg.operators:
        if op not in OPS:
            raise UserError(f"data.arith.operators: unknown operator {op!r}; "
                            "allowed: " + ", ".join(OPS))
    if cfg.min_value > cfg.max_value:
        raise UserError(f"data.arith.min_value={cfg.min_value} must be <= "
                        f"data.arith.max_value={cfg.max_value}")


def _one_problem(rng: random.Random, cfg: ArithConfig) -> Optional[dict]:
    """One random problem as a row dict, or None when a drawn chain has no valid operand."""
    lo, hi = cfg.min_value, cfg.max_value
    first = acc = rng.randint(lo, hi)
    expr, low_precedence, steps, ops = _fmt(first), False, [], []
    for _ in range(cfg.num_ops):
        op = rng.choice(cfg.operators)
        draw, apply = OPS[op]
        b = draw(rng, acc, lo, hi)
        if b is None:
            return None
        new = apply(acc, b)
        steps.append(f"{_fmt(acc)} {op} {_fmt(b)} = {_fmt(new)}.")
        if op in "*/" and low_precedence:
            expr = f"({expr})"
        expr, low_precedence, acc = f"{expr} {op} {_fmt(b)}", op in "+-", new
        ops.append((op, b))
    if cfg.num_ops == 1 and first >= 0 and ops[0][1] >= 0:
        phrasing = rng.choice(SYMBOLIC + WORD[ops[0][0]])
    else:
        phrasing = rng.choice(SYMBOLIC)
    question = phrasing.format(expr=expr, a=first, b=ops[0][1], name=rng.choice(NAMES),
                               item=rng.choice(ITEMS))
    return {"question": question, "answer": str(acc), "solution": " ".join(steps),
            "expression": expr, "num_ops": cfg.num_ops}


def generate(cfg: ArithConfig, seed: int) -> list[dict]:
    """``cfg.num_examples`` distinct problems (fewer if the settings allow fewer), same seed
    same list. Each row: question, answer (exact integer as text), solution (the worked
    steps), expression (the question's arithmetic, evaluable with Python), num_ops."""
    check_config(cfg)
    rng = random.Random(seed)
    rows: list[dict] = []
    seen = set()
    for _ in range(20 * cfg.num_examples + 1000):
        if len(rows) == cfg.num_examples:
            break
        row = _one_problem(rng, cfg)
        if row is not None and row["expression"] not in seen:
            seen.add(row["expression"])
            rows.append(row)
    if len(rows) < cfg.num_examples:
        log.info("data.arith: only %d distinct problems for these settings "
                    "(data.arith.num_examples=%d)", len(rows), cfg.num_examples)
    if len(rows) < 2:
        raise UserError(f"data.arith: these settings give {len(rows)} distinct problem(s); "
                        "widen data.arith.min_value/max_value or add operators")
    return rows
