"""RewardStack: building from config, weighted totals, isolation of errors and time-outs."""

import math
import time

import pytest
import torch

from grpo_cli.config.compose import compose_config
from grpo_cli.config.schema import RewardComponent, RewardConfig
from grpo_cli.errors import UserError
from grpo_cli.rewards import build_reward_stack
from grpo_cli.rewards.stack import Component, RewardStack
from grpo_cli.trainer.metrics import accuracy, reward_metrics


# User rewards, referenced by import path as f"{__name__}:name".
def ones(prompts, completions, answers, **_):
    return [1.0] * len(completions)


def raise_on_bad(prompts, completions, answers, **_):
    if "bad" in completions:
        raise RuntimeError("cannot score 'bad'")
    return [0.5] * len(completions)


def sleep_on_slow(prompts, completions, answers, **_):
    if "slow" in completions:
        time.sleep(5)
    return [0.5] * len(completions)


def short_list(prompts, completions, answers, **_):
    return [1.0] * (len(completions) - 1)


def not_applicable_on_odd(prompts, completions, answers, index, **_):
    return [None if i % 2 else 2.0 for i in index]


def no_kwargs(prompts, completions, answers):
    return [0.0] * len(completions)


NOT_CALLABLE = 3


def meta(n):
    return dict(completion_ids_len=[10] * n, truncated=[False] * n, max_new_tokens=100,
                index=list(range(n)))


def stack_of(**components):
    return build_reward_stack(RewardConfig(components=components, num_workers=4),
                              answer_format="hash")


def test_weighted_total_and_metrics():
    stack = stack_of(
        correctness=RewardComponent(fn="correctness", weight=1.0, kwargs={"mode": "strict"}),
        format=RewardComponent(fn="format", weight=0.5),
        odd=RewardComponent(fn=f"{__name__}:not_applicable_on_odd", weight=0.1),
    )
    completions = ["#### 7", "7", "#### 8", "x\n#### 7"]
    result = stack([""] * 4, completions, ["7"] * 4, **meta(4))
    assert result.per_component["correctness"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert result.per_component["format"].tolist() == [1.0, 0.0, 1.0, 1.0]
    odd = result.per_component["odd"]
    assert odd[0] == 2.0 and math.isnan(odd[1])
    # total: 1*c + 0.5*f + 0.1*odd (odd excluded on samples 1 and 3)
    assert result.total.tolist() == pytest.approx([1.7, 0.0, 0.7, 1.5])
    assert result.matrix().shape == (4, 3)
    m = reward_metrics(result.per_component, result.errors)
    assert m["rewards/correctness/mean"] == pytest.approx(0.5)
    assert m["rewards/correctness/std"] == pytest.approx(0.5)
    assert m["rewards/odd/mean"] == pytest.approx(2.0)   # over applicable samples only
    assert m["rewards/odd/std"] == pytest.approx(0.0)
    assert m["rewards/format/errors"] == 0.0
    assert accuracy(result.per_component, result.correctness_name) == pytest.approx(0.5)


def test_sample_with_no_applicable_component_totals_zero():
    stack = RewardStack([Component("odd", not_applicable_on_odd, "odd", weight=3.0)],
                        answer_format="hash")
    result = stack(["", ""], ["a", "b"], ["", ""], **meta(2))
    assert result.total.tolist() == [6.0, 0.0]
    # no correctness component
    assert accuracy(result.per_component, result.correctness_name) is None


def test_a_raising_sample_gets_the_fallback_and_is_counted():
    stack = stack_of(r=RewardComponent(fn=f"{__name__}:raise_on_bad", fallback=-1.0),
                     n=RewardComponent(fn=f"{__name__}:raise_on_bad", fallback=None))
    result = stack([""] * 4, ["ok", "bad", "ok", "bad"], [""] * 4, **meta(4))
    assert result.per_component["r"].tolist() == [0.5, -1.0, 0.5, -1.0]
    assert result.errors == {"r": 2, "n": 2}
    assert reward_metrics(result.per_component, result.errors)["rewards/r/errors"] == 2.0
    n = result.per_component["n"]
    assert n[0] == 0.5 and torch.isnan(n[1])  # null fallback: excluded
    assert result.total.tolist() == pytest.approx([1.0, -1.0, 1.0, -1.0])
    # 'bad' was scored by no component (each raised): unscored, whatever its fallback total.
    assert result.scored.tolist() == [True, False, True, False]


def test_one_component_scoring_a_sample_makes_it_scored():
    stack = stack_of(r=RewardComponent(fn=f"{__name__}:raise_on_bad"),
                     o=RewardComponent(fn=f"{__name__}:ones"))
    result = stack([""] * 2, ["ok", "bad"], [""] * 2, **meta(2))
    assert result.scored.tolist() == [True, True]
    # Not applicable everywhere (None) is not a score either.
    stack = stack_of(odd=RewardComponent(fn=f"{__name__}:not_applicable_on_odd"))
    assert stack([""] * 2, ["a", "b"], [""] * 2, **meta(2)).scored.tolist() == [True, False]


def test_a_sample_past_its_timeout_gets_the_fallback_and_the_others_their_values():
    stack = stack_of(s=RewardComponent(fn=f"{__name__}:sleep_on_slow", timeout_s=0.2,
                                       fallback=0.0))
    start = time.perf_counter()
    result = stack([""] * 3, ["ok", "slow", "ok"], [""] * 3, **meta(3))
    # batch call: 0.2 s * 3 = 0.6 s, then the samples one by one (0.2 s each, in parallel)
    assert time.perf_counter() - start < 3.0
    assert result.per_component["s"].tolist() == [0.5, 0.0, 0.5]
    assert result.errors == {"s": 1}


def test_wrong_number_of_values_fails_at_once():
    stack = stack_of(x=RewardComponent(fn=f"{__name__}:short_list"))
    with pytest.raises(UserError, match="reward 'x' returned 3 values for 4 completions"):
        stack([""] * 4, ["a"] * 4, [""] * 4, **meta(4))


@pytest.mark.parametrize("path, message", [
    ("no_such_package_xyz.rewards:fn", "cannot import 'no_such_package_xyz.rewards'"),
    ("json:no_such_function", "has no attribute 'no_such_function'"),
    (f"{__name__}:NOT_CALLABLE", "not a function"),
    (f"{__name__}:no_kwargs", "must accept"),
    ("corectness", "not a registered reward"),
])
def test_bad_fn_is_a_user_error_naming_component_and_path(path, message):
    with pytest.raises(UserError, match=message) as info:
        stack_of(mine=RewardComponent(fn=path))
    assert "reward.components.mine.fn" in str(info.value) and path in str(info.value)


def test_bad_builtin_kwargs_are_user_errors_at_build_time():
    with pytest.raises(UserError, match="unknown \\['mdoe'\\]"):
        stack_of(c=RewardComponent(fn="correctness", kwargs={"mdoe": "strict"}))
    with pytest.raises(UserError, match="mode"):
        stack_of(c=RewardComponent(fn="correctness", kwargs={"mode": "lenient"}))
    with pytest.raises(UserError, match="variant"):
        stack_of(f=RewardComponent(fn="format", kwargs={"variant": "loose"}))
    with pytest.raises(UserError, match="empty"):  # a config rule: the stack trusts it
        compose_config("train", ["~reward.components.correctness", "~reward.components.format"])


def test_user_reward_by_import_path_and_empty_batch():
    stack = stack_of(one=RewardComponent(fn=f"{__name__}:ones", weight=2.0))
    assert stack(["p"], ["c"], ["a"], **meta(1)).total.tolist() == [2.0]
    empty = stack([], [], [], **meta(0))
    assert empty.total.shape == (0,)
    assert math.isnan(reward_metrics(empty.per_component, empty.errors)["rewards/one/mean"])


def test_batch_of_64_numeric_answers_is_fast():
    stack = stack_of(
        correctness=RewardComponent(fn="correctness"),
        format=RewardComponent(fn="format"),
        length=RewardComponent(fn="length"),
        repetition=RewardComponent(fn="repetition"),
    )
    completions = [f"Adding up gives {i}.\n#### {i}" for i in range(64)]
    answers = [str(i % 4) for i in range(64)]
    stack([""] * 64, completions, answers, **meta(64))  # warm-up
    start = time.perf_counter()
    result = stack([""] * 64, completions, answers, **meta(64))
    assert time.perf_counter() - start < 0.5  # a few ms in practice
    assert accuracy(result.per_component, result.correctness_name) == pytest.approx(4 / 64)


def test_the_answer_format_is_given_once_when_the_stack_is_built():
    # The built-in format reward reads answer_format from the metadata: the stack adds the
    # one it was built with, so a '\boxed{}' answer passes under 'boxed' and fails under 'hash'.
    format_only = RewardConfig(components={"format": RewardComponent(fn="format")})
    boxed = build_reward_stack(format_only, answer_format="boxed")
    hashed = build_reward_stack(format_only, answer_format="hash")
    assert boxed([""], ["so \\boxed{7}"], ["7"], **meta(1)).total.tolist() == [1.0]
    assert hashed([""], ["so \\boxed{7}"], ["7"], **meta(1)).total.tolist() == [0.0]
    with pytest.raises(TypeError, match="fixed when the stack is built"):
        boxed([""], ["x"], ["7"], answer_format="hash", **meta(1))
