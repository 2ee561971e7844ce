"""Each built-in reward on hand cases (values worked out in the comments)."""

import math

import pytest

from grpo_cli.errors import UserError
from grpo_cli.rewards import REGISTRY
from grpo_cli.rewards.builtin import (
    correctness,
    cosine_correctness,
    format_reward,
    length,
    repetition,
    tag_count,
)

R1_GOOD = "<think>\n3 + 4 = 7\n</think>\n<answer>\n7\n</answer>"


def meta(n, answer_format="hash", lens=None, max_new_tokens=100):
    return dict(completion_ids_len=lens or [10] * n, truncated=[False] * n,
                max_new_tokens=max_new_tokens, answer_format=answer_format,
                level=["1"] * n, subject=["x"] * n)


def test_registry_names():
    assert set(REGISTRY) == {"correctness", "cosine_correctness", "format", "tag_count",
                             "length", "repetition", "code_tests"}


def test_correctness_hash_template_strict_and_flexible():
    completions = ["so 18.\n#### 18", "so 18", r"\boxed{18}", "#### 180", "#### 1,000"]
    answers = ["18", "18", "18", "18", "1000"]
    prompts = [""] * 5
    strict = correctness(prompts, completions, answers, mode="strict", **meta(5))
    assert strict == [1.0, 0.0, 0.0, 0.0, 1.0]
    flexible = correctness(prompts, completions, answers, mode="flexible", **meta(5))
    assert flexible == [1.0, 1.0, 1.0, 0.0, 1.0]


def test_correctness_r1_and_boxed_templates_and_missing_gold():
    assert correctness([""], [R1_GOOD], ["7"], mode="strict", **meta(1, "r1")) == [1.0]
    boxed = [r"thus $\boxed{\frac{\sqrt2}{2}}$", r"$\boxed{[1,2]}$"]
    assert correctness(["", ""], boxed, [r"\sqrt{2}/2", "(1,2)"], mode="strict",
                       **meta(2, "boxed")) == [1.0, 0.0]
    assert correctness([""], ["#### 3"], [""], **meta(1)) == [None]  # no gold: n/a
    assert correctness([""], [r"#### 3 \boxed{4}"], ["4"], mode="strict",
                       order=["boxed", "hash"], **meta(1)) == [1.0]


def test_format_r1_strict_and_soft():
    completions = [
        R1_GOOD,                                                    # strict and soft
        "<think>3+4</think> <answer>7</answer>",                    # soft only (no newlines)
        "<think>\na\n</think>\n<answer>\n7\n</answer>\n<answer>\n8\n</answer>",  # extra pair
        "<answer>\n7\n</answer>\n<think>\na\n</think>",             # wrong order
        "7",
    ]
    prompts = [""] * 5
    assert format_reward(prompts, completions, [""] * 5, variant="strict",
                         **meta(5, "r1")) == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert format_reward(prompts, completions, [""] * 5, variant="soft",
                         **meta(5, "r1")) == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_format_counts_a_think_tag_opened_by_the_prompt():
    prompt = "<|assistant|>\n<think>\n"
    completion = "3 + 4 = 7\n</think>\n<answer>\n7\n</answer>"
    assert format_reward([prompt], [completion], ["7"], **meta(1, "r1")) == [1.0]
    assert tag_count([prompt], [completion], ["7"], **meta(1, "r1")) == [1.0]


def test_format_hash_and_boxed():
    hashes = ["work\n#### 18", "#### 18\nThen more text", "18"]
    assert format_reward([""] * 3, hashes, [""] * 3, variant="strict",
                         **meta(3, "hash")) == [1.0, 0.0, 0.0]
    assert format_reward([""] * 3, hashes, [""] * 3, variant="soft",
                         **meta(3, "hash")) == [1.0, 1.0, 0.0]
    boxes = [r"so $\boxed{18}$.", r"\boxed{18} and then more", "18"]
    assert format_reward([""] * 3, boxes, [""] * 3, variant="strict",
                         **meta(3, "boxed")) == [1.0, 0.0, 0.0]
    assert format_reward([""] * 3, boxes, [""] * 3, variant="soft",
                         **meta(3, "boxed")) == [1.0, 1.0, 0.0]


def test_tag_count():
    completions = [
        R1_GOOD,                                           # 4 tags once: 1.0
        "<think>\nx\n</think>\n",                          # 2 tags: 0.5
        R1_GOOD + "\nabcd",                                # 1.0 - 4 chars * 0.001 = 0.996
        "<think>\n<think>\nx\n</think>\n<answer>\n7\n</answer>",  # <think>\n twice: 0.75
    ]
    got = tag_count([""] * 4, completions, [""] * 4, **meta(4, "r1"))
    assert got == pytest.approx([1.0, 0.5, 0.996, 0.75])
    assert tag_count([""], [R1_GOOD], [""], **meta(1, "hash")) == [None]  # not r1: n/a


def test_length_soft_overlong_penalty():
    # L = 100, C = 20: free up to 80, then (80 - n) / 20, -1 beyond 100
    lens = [50, 80, 90, 100, 120]
    got = length([""] * 5, [""] * 5, [""] * 5, max_len=100, cache_len=20,
                 **meta(5, lens=lens, max_new_tokens=1000))
    assert got == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0])
    # defaults: L = max_new_tokens = 100, C = 100 // 5 = 20
    assert length([""] * 5, [""] * 5, [""] * 5, **meta(5, lens=lens)) == pytest.approx(got)
    with pytest.raises(UserError, match="cache_len"):
        length([""], [""], [""], cache_len=200, **meta(1))


def test_cosine_correctness():
    # max_len 100; len 0 -> cos 1, len 50 -> cos 0, len 100 -> cos -1
    completions = ["#### 7", "#### 7", "#### 7", "#### 8", "#### 8", "#### 8"]
    lens = [0, 50, 100, 0, 50, 100]
    got = cosine_correctness([""] * 6, completions, ["7"] * 6, **meta(6, lens=lens))
    # correct: 1.0 -> 0.75 -> 0.5 ; wrong: -1.0 -> -0.75 -> -0.5
    assert got == pytest.approx([1.0, 0.75, 0.5, -1.0, -0.75, -0.5])


def test_repetition():
    # "a b c a b c": 3-grams abc bca cab abc -> 4 grams, 3 unique -> repeated share 0.25
    got = repetition(["", "", ""], ["a b c a b c", "one two three four", "hi"], [""] * 3,
                     n=3, max_penalty=2.0, **meta(3))
    assert got == pytest.approx([-0.5, 0.0, 0.0])
    loop = " ".join(["same words again"] * 50)
    assert repetition([""], [loop], [""], **meta(1))[0] < -0.9


def test_every_builtin_ignores_unknown_metadata_and_returns_one_value_each():
    for name, fn in REGISTRY.items():
        if name == "code_tests":  # its answers are code tests: test_rewards_code.py
            continue
        out = fn(["", ""], [R1_GOOD, "#### 3"], ["7", "3"], new_key=[1, 2], **meta(2, "r1"))
        assert len(out) == 2, name
        assert all(v is None or math.isfinite(v) for v in out), name
