"""code_tests: program extraction, HumanEval/MBPP test steps, the reward in the stack."""

import os

import pytest

from grpo_cli.config.schema import RewardComponent, RewardConfig
from grpo_cli.errors import UserError
from grpo_cli.rewards import build_reward_stack
from grpo_cli.rewards.code import code_tests
from grpo_cli.rewards.code_spec import (
    CodeSpec,
    extract_program,
    last_fenced_block,
    steps_from_asserts,
    steps_from_check,
)

HE_TEST = '''
METADATA = {"author": "jt"}


def check(candidate):
    assert True, "warm-up"
    xs = [1, 2, 3]
    assert candidate(xs) == 6
    for n in range(3):
        assert candidate([n]) == n
    assert candidate([]) == 0
'''
HE_PROMPT = 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum."""\n'
SPEC = CodeSpec(steps_from_check(HE_TEST, "he/0"), "total", HE_PROMPT)
ROOTLESS = pytest.mark.skipif(os.geteuid() != 0, reason="default isolation is 'uid' as root")


def test_check_function_becomes_steps():
    steps = steps_from_check(HE_TEST, "he/0")
    assert [t for _, t in steps] == [False, False, False, True, True, True]
    assert steps[0][0].startswith("METADATA") and steps[2] == ("xs = [1, 2, 3]", False)
    assert steps[4][0].startswith("for n in range(3):")  # a loop of asserts is one test


def test_problems_without_tests_are_user_errors():
    with pytest.raises(UserError, match="no tests"):
        steps_from_check("def check(candidate):\n    assert True\n", "he/1")
    with pytest.raises(UserError, match="no `def check"):
        steps_from_check("x = 1\n", "he/2")
    with pytest.raises(UserError, match="no tests"):
        steps_from_asserts([], ["import math"], "mbpp/3")
    with pytest.raises(UserError, match="no tests"):
        CodeSpec.from_json('{"steps": [["x = 1", false]]}')
    with pytest.raises(UserError, match="not a code problem"):
        CodeSpec.from_json("42")


def test_last_fenced_block():
    text = "first\n```python\na = 1\n```\nthen\n```py\nb = 2\n```\nbye"
    assert last_fenced_block(text) == "b = 2\n"
    assert last_fenced_block("```python\ndef f():\n    return 1") == "def f():\n    return 1"
    assert last_fenced_block("no code here") is None


def test_extract_program_styles():
    body = "    return sum(xs)\n"
    assert extract_program(body, SPEC, "complete") == HE_PROMPT + body
    assert extract_program(body, SPEC, "fenced") is None
    whole = "```python\ndef total(xs):\n    return sum(xs)\n```"
    assert extract_program(whole, SPEC, "fenced") == "from typing import List\n" \
        "def total(xs):\n    return sum(xs)\n"
    helper_only = "```python\n    return sum(xs)\n```"  # no def: the prompt's code goes first
    assert extract_program(helper_only, SPEC, "complete") == HE_PROMPT + "    return sum(xs)\n"


@ROOTLESS
def test_reward_is_the_share_of_tests_passed():
    answers = [SPEC.to_json()] * 5
    completions = ["    return sum(xs)\n",           # 3 / 3
                   "    return sum(xs) if xs else 1\n",  # 2 / 3
                   "    return (\n",                   # syntax error
                   "    while True:\n        pass\n",  # time-out
                   "    import sys\n    sys.exit(0)\n"]  # every call exits: each test fails
    sandbox = {"wall_s": 3, "cpu_s": 1}
    values = code_tests([""] * 5, completions, answers, answer_format="complete",
                        syntax_error=-0.5, sandbox=sandbox)
    assert values == [1.0, pytest.approx(2 / 3), -0.5, 0.0, 0.0]
    m = values.metrics
    assert m["pass_rate"] == 0.2 and m["compile_error"] == 0.2 and m["timeout"] == 0.2
    assert m["crashed"] == 0.0 and m["tests_passed"] == pytest.approx((1 + 2 / 3) / 5)
    assert m["sandbox_s"] > 0
    strict = code_tests([""] * 2, completions[:2], answers[:2], answer_format="complete",
                        all_or_nothing=True, sandbox=sandbox)
    assert strict == [1.0, 0.0]


@ROOTLESS
def test_code_reward_in_the_stack_logs_its_metrics():
    cfg = RewardConfig(components={"code": RewardComponent(
        fn="code_tests", kwargs={"workers": 2, "sandbox": {"wall_s": 3}}, timeout_s=20)})
    stack = build_reward_stack(cfg, answer_format="fenced")
    spec = CodeSpec(steps_from_asserts(["assert f(1) == 2", "assert f(2) == 3"], [], "t"))
    result = stack(["p", "p"], ["```python\ndef f(x):\n    return x + 1\n```", "no code"],
                   [spec.to_json()] * 2)
    assert result.total.tolist() == [1.0, 0.0]
    m = result.extra  # what the trainer logs as rewards/code/<key> (ScoredBatch.reported)
    assert m["rewards/code/pass_rate"] == 0.5 and m["rewards/code/compile_error"] == 0.5
    assert {"rewards/code/timeout", "rewards/code/crashed", "rewards/code/sandbox_s",
            "rewards/code/tests_passed"} <= set(m)


@pytest.mark.parametrize("kwargs, match", [
    ({"sandbox": {"wall_seconds": 3}}, "unknown sandbox option"),
    ({"sandbox": {"wall_s": 0}}, "must be > 0"),
    ({"sandbox": {"isolation": "nsjail"}}, "isolation 'nsjail' is not one of"),
    ({"sandbox": {"python": "/no/such/python"}}, "not an executable"),
    ({"sandbox": {"isolation": "bwrap", "bwrap": "/no/such/bwrap"}},
     "sandbox bwrap '/no/such/bwrap' is not an executable"),
    ({"sandbox": {"isolation": "bwrap", "bwrap": "false"}},  # found, but its probe fails
     r"isolation 'bwrap' \(the code reward's kwargs.sandbox.isolation\): /\S*false failed"),
    ({"workers": 0}, "workers=0"),
])
def test_bad_code_reward_config_is_one_line(kwargs, match):
    cfg = RewardConfig(components={"code": RewardComponent(fn="code_tests", kwargs=kwargs)})
    with pytest.raises(UserError, match=match):
        build_reward_stack(cfg, answer_format="fenced")
