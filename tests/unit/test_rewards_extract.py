"""Answer extraction: each method, strict and flexible modes, and the gold-answer helpers."""

import pytest

from grpo_cli.errors import UserError
from grpo_cli.rewards import extract_answer, hash_answer, last_boxed
from grpo_cli.rewards.extract import DEFAULT_ORDER, last_number

R1, HASH, BOXED = DEFAULT_ORDER["r1"], DEFAULT_ORDER["hash"], DEFAULT_ORDER["boxed"]


@pytest.mark.parametrize("text, expected", [
    (r"so $\boxed{5}$.", "5"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),                     # nested braces
    (r"\boxed{1} then \boxed{\sqrt{x^{2}}}", r"\sqrt{x^{2}}"),  # the last one
    (r"\fbox{7}", "7"),
    (r"is $\boxed 5$.", "5"),                                       # brace-less MATH form
    (r"\boxed{\frac{1}{2}", None),                                  # unbalanced
    ("no box here", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("She makes $18.\n#### 18", "18"),
    ("#### 1,234", "1234"),
    ("#### -3.5", "-3.5"),
    ("#### $42", "42"),
    ("#### 1\nmore\n#### 2", "2"),
    ("no hash", None),
    ("#### twelve", None),
])
def test_hash_answer(text, expected):
    assert hash_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("3 apples and 1,000 pears.", "1000"),
    ("x is -2.5.", "-2.5"),
    ("values 1, 2, 3", "3"),
    ("values 1,2,3", "1.2"),        # read as math-verify does: `1,2` is a decimal comma
    ("code AZYUK2A", None),         # a digit inside a word is not a number
    ("none", None),
])
def test_last_number(text, expected):
    assert last_number(text) == expected


def test_answer_tag():
    text = "<think>\n2+2\n</think>\n<answer>\n 4 \n</answer>"
    assert extract_answer(text, R1, "strict") == "4"
    boxed_inside = r"<answer>The answer is \boxed{\frac{3}{4}}.</answer>"
    assert extract_answer(boxed_inside, R1, "strict") == r"\frac{3}{4}"
    assert extract_answer("<answer>1</answer> <answer>2</answer>", R1, "strict") == "2"


def test_strict_uses_only_the_templates_format():
    # hash template: only `#### N` counts, even when a box or a number is there
    assert extract_answer(r"so \boxed{5}", HASH, "strict") is None
    assert extract_answer("it is 12", HASH, "strict") is None
    assert extract_answer("it is 12\n#### 12", HASH, "strict") == "12"
    # r1 without tags
    assert extract_answer(r"The answer is \boxed{3}", R1, "strict") is None
    # boxed template
    assert extract_answer("#### 4", BOXED, "strict") is None
    assert extract_answer(r"$\boxed{4}$", BOXED, "strict") == "4"
    # the first explicit method of a custom order
    assert extract_answer(r"#### 3 \boxed{4}", ["last_number", "boxed", "hash"], "strict") == "4"


def test_flexible_tries_each_method_then_the_last_number():
    assert extract_answer(r"so \boxed{5}", HASH, "flexible") == "5"
    assert extract_answer("it is 12 eggs", HASH, "flexible") == "12"
    assert extract_answer("<answer>7</answer> #### 8", R1, "flexible") == "7"
    assert extract_answer("<answer>7</answer> #### 8", HASH, "flexible") == "8"
    assert extract_answer("no numbers", HASH, "flexible") is None
    assert extract_answer("only 9 here", ["boxed"], "flexible") == "9"  # implicit fallback


def test_bad_order_or_mode_is_a_user_error():
    with pytest.raises(UserError, match="unknown method"):
        extract_answer("x", ["boxd"], "flexible")
    with pytest.raises(UserError, match="mode"):
        extract_answer("x", HASH, "lenient")
    with pytest.raises(UserError, match="strict"):
        extract_answer("x", ["last_number"], "strict")
