"""Our flexible verdict against math-verify's own `verify(parse(gold), parse(completion))`.

Completions are generated from the MATH-500 gold answers of every 5th problem (100 of them),
seven surface forms each (FORMS; W is the next problem's gold, a wrong answer): the gold
boxed, stated in `$...$`, stated after an earlier wrong box, next to a second box (for a list
gold its elements boxed one by one, otherwise a hedge with W), W boxed, the gold as plain text
without `$`, and the gold assigned (`$y = gold$`) inside a sentence. The gold is given to
math-verify as `$gold$` (a bare `\\frac{a}{b}` or `p - q` is not LaTeX it finds). Every
disagreement must be listed in KNOWN with the reason, so a change on either side shows up
here; today there are none (the hand-written cases of tests/rewards/grading_cases.md, compared
in test_rewards_grading.py, have theirs). Run with `pytest -s` to see the agreement.
"""

import json
import logging
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from grpo_cli.rewards.builtin import correctness

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "math500" / "test.jsonl"
FORMS = {
    "boxed": "So the answer is $\\boxed{{{g}}}$.",
    "stated": "Therefore, the answer is ${g}$.",
    "final_after_box": "At first I wrote $\\boxed{{{w}}}$, but the final answer is ${g}$.",
    "two_boxes": "The answers are $\\boxed{{{a}}}$ and $\\boxed{{{b}}}$.",
    "wrong": "So the answer is $\\boxed{{{w}}}$.",
    "plain": "The final answer is {g}.",
    "assigned": "Solving, we find $y = {g}$, as required.",
}
# (unique_id, form) -> why we and math-verify differ; "ours" names the side a careful human
# takes.
KNOWN: Dict[Tuple[str, str], str] = {}


def _split(gold: str, wrong: str) -> Tuple[str, str]:
    """A list gold `1,-2` as its two halves; any other gold with the wrong answer beside it."""
    if "," in gold and gold[0] not in "([\\{" and gold.count(",") == 1:
        first, second = gold.split(",")
        return first.strip(), second.strip()
    return gold, wrong


def _variants() -> List[Tuple[str, str, str, str]]:
    """(unique_id, form, completion, gold) for every 5th MATH-500 problem."""
    if not DATA.exists():
        pytest.skip(f"data file not found: {DATA}")
    rows = [json.loads(line) for line in DATA.open()][::5]
    out = []
    for i, row in enumerate(rows):
        gold, wrong = row["answer"], rows[(i + 1) % len(rows)]["answer"]
        first, second = _split(gold, wrong)
        for form, template in FORMS.items():
            text = template.format(g=gold, w=wrong, a=first, b=second)
            out.append((row["unique_id"], form, text, gold))
    return out


def _math_verify_verdicts(variants: List[Tuple[str, str, str, str]]) -> List[bool]:
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return [bool(verify(parse(f"${gold}$"), parse(completion)))
            for _, _, completion, gold in variants]


def test_flexible_verdict_agrees_with_math_verify():
    variants = _variants()
    assert len(variants) == 700
    theirs = _math_verify_verdicts(variants)
    ours = correctness([""] * len(variants), [v[2] for v in variants], [v[3] for v in variants],
                       mode="flexible", answer_format="boxed", symbolic_timeout_s=10.0)
    differ = {}
    for (uid, form, completion, gold), mine, their in zip(variants, ours, theirs):
        if bool(mine) != their:
            differ[(uid, form)] = (f"ours {bool(mine)}, math-verify {their}: "
                                   f"{completion!r} vs {gold!r}")
    for key, text in differ.items():
        print(f"\n{key}: {text}  ({KNOWN.get(key, 'NOT LISTED')})")
    agree = 1 - len(differ) / len(variants)
    print(f"\nagreement with math-verify on {len(variants)} variants: {agree:.4f}")
    assert set(differ) == set(KNOWN)
