"""Answer extraction: each method, strict and flexible modes, and the gold-answer helpers."""

import pytest

from grpo_cli.errors import UserError
from grpo_cli.rewards import extract_answer, hash_answer, last_boxed
from grpo_cli.rewards.extract import DEFAULT_ORDER, final_boxed, last_number
from grpo_cli.rewards.locate import BOXED_OR_FINAL, leading_number, locate

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


@pytest.mark.parametrize("text, expected", [
    (r"\boxed{(2,2)} and \boxed{(6,2)}", "(2,2),(6,2)"),
    (r"$x = \boxed{-2}$ and $x = \boxed{1}$.", "-2,1"),
    (r"$\boxed{a}$, $\boxed{b}$ \text{ or } $\boxed{c}$", "a,b,c"),
    (r"$\boxed{10}$. Another way gives $\boxed{10}$.", "10"),      # a second solution
    (r"$\boxed{3}$, so the sum is $\boxed{7}$.", "7"),             # words between: not a set
    (r"$\boxed{11}\times\boxed{20}=12$, so $\boxed{12}$", "12"),
    (r"\boxed 5", "5"),
    ("no box", None),
])
def test_final_boxed_reads_boxes_side_by_side_as_one_set(text, expected):
    assert final_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    (r"So $y = \frac13$.", r"y = \frac{1}{3}"),            # the whole expression
    (r"so $x \in [-2,7]$ here", r"x \in [-2,7]"),
    (r"is $(1, 4.5)$", "(1, 4.5)"),
    ("The answer is 18. That took me 3 steps.", "18"),      # a stated answer first
    ("Answer: 42 (checked 2 ways)", "42"),
    (r"\boxed{255}. The final answer is $10,455$", "10,455"),  # the later of the two
    (r"The final answer is \boxed{5}. I hope it is correct.", "5"),
    ("It is 1000,99 or so", "1000.99"),                     # decimal comma
    ("about 1 000 people", "1000"),
    ("It rose by 50%", "50%"),
    (r"The ratio is \frac{1+\sqrt5}{2}", None),             # the 2 is not a number here
    ("AZYUK2A", None),
])
def test_locate_ranks_as_math_verify(text, expected):
    assert locate(text) == expected


def test_locate_max_priority_and_long_text():
    assert locate("so $5$", BOXED_OR_FINAL) is None           # no box, no final answer
    assert locate(r"so $\boxed{5}$", BOXED_OR_FINAL) == "5"
    looping = "1 " * 100_000 + "so it is 7"
    assert locate(looping) == "7"                              # only the tail is scanned
    assert locate("The answer is 6.\n" + "x" * 5000 + " 9") == "6"  # anchors: all the text


@pytest.mark.parametrize("number", ["1,234", "1 234", "12,34", "0,111", "-3.5", "007", ".5",
                                    "1,234.5", "-0.25"])
def test_numbers_read_as_math_verify_reads_them(number):
    from math_verify.parser import ExprExtractionConfig, extract_expr, lazy_expr_regex

    pattern = lazy_expr_regex(ExprExtractionConfig())[-1][0]
    assert leading_number(number) == extract_expr(pattern.match(" " + number))[1]


@pytest.mark.parametrize("text, expected", [
    ("She makes $18.\n#### 18", "18"),
    ("#### 12,34", "12.34"),        # never the prefix 12
    ("#### 1 000", "1000"),
    ("#### 5\nthen ####", "5"),     # the last #### that has a number
])
def test_hash_answer_reads_the_whole_number(text, expected):
    assert hash_answer(text) == expected
