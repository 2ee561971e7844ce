"""Whole grading (extraction, then equivalence) against the verdict a careful human gives.

The cases are the tables of grading_cases.md (one per category of surface form): completion,
gold answer, prompt template, strict verdict, flexible verdict. Strict reads only the
template's own format (`####`, `\\boxed{}`, `<answer>`); flexible reads the answer as a
person would.
"""

from pathlib import Path
from typing import List, Tuple

import pytest

from grpo_cli.rewards.builtin import correctness

# Completion -> why math-verify's `verify(parse("$gold$"), parse(completion))` differs from
# the careful human's flexible verdict written in grading_cases.md.
DIFFERS_FROM_MATH_VERIFY = {
    "<answer>(1, 2)</answer>": "math-verify does not read the R1 tag: it takes the last number, 2",
    "So, 9 - 1 = ": "math-verify takes the restated question 9 - 1 as the answer (it equals 8)",
    "We add 2 and 12, which is 22. Here: 2 + 12 = ": "math-verify takes the left side 2 + 12",
}
CASES_FILE = Path(__file__).with_name("grading_cases.md")
VERDICTS = {"right": 1.0, "wrong": 0.0}


def load_cases(path: Path = CASES_FILE) -> List[Tuple[str, str, str, str, float, float]]:
    """(category, completion, gold, template, strict, flexible) for every table row."""
    rows, category = [], ""
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            category = line[3:]
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        completion, gold = (c.strip("`").replace("\\n", "\n") for c in cells[:2])
        rows.append((category, completion, gold, cells[2], VERDICTS[cells[3]],
                     VERDICTS[cells[4]]))
    return rows


ROWS = load_cases()


def test_every_category_has_cases():
    categories = {row[0] for row in ROWS}
    assert len(categories) == 9 and len(ROWS) >= 40


@pytest.mark.parametrize("category, completion, gold, template, strict, flexible", ROWS,
                         ids=[f"{row[0][:16]}-{i}" for i, row in enumerate(ROWS)])
def test_graded_as_a_person_would(category, completion, gold, template, strict, flexible):
    for mode, expected in (("strict", strict), ("flexible", flexible)):
        reward = correctness([""], [completion], [gold], mode=mode, answer_format=template,
                             symbolic_timeout_s=30.0)[0]
        assert reward == expected, f"{mode}: {completion!r} vs gold {gold!r}"


def test_math_verify_differs_only_where_listed():
    from math_verify import parse, verify

    differ = {completion for _, completion, gold, _, _, flexible in ROWS
              if verify(parse(f"${gold}$"), parse(completion)) != bool(flexible)}
    assert differ == set(DIFFERS_FROM_MATH_VERIFY)
