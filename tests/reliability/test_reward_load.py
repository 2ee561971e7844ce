"""Reward isolation under load: 256 completions, 8 workers, a reward that raises on 10% and
hangs past its time limit on 5%. The stack must return in bounded time with the counts right."""

from __future__ import annotations

import time

from grpo_cli.config.schema import RewardComponent
from grpo_cli.rewards.stack import RewardStack, build_component
from grpo_cli.trainer.metrics import reward_metrics

N = 256


def _completions() -> list[str]:
    # i % 20 == 0 hangs (13 of 256, the first one at index 0, so the batch call hangs first);
    # i % 10 == 3 raises (26 of 256).
    return [("hang" if i % 20 == 0 else "raise" if i % 10 == 3 else "ok") + f"-{i}"
            for i in range(N)]


def test_raising_and_hanging_rewards_are_isolated_in_bounded_time():
    spec = RewardComponent(fn="faulty_rewards:flaky", weight=2.0, timeout_s=0.2, fallback=-1.0,
                           kwargs={"hang_s": 1.5})
    stack = RewardStack([build_component("flaky", spec)], num_workers=8, answer_format="hash")
    completions = _completions()
    start = time.perf_counter()
    result = stack(["q"] * N, completions, ["a"] * N)
    elapsed = time.perf_counter() - start
    # Batch call: hangs 1.5 s at index 0, then raises at index 3. Then 256 single calls on 8
    # workers, 13 of them cut at 0.2 s: well under 5 s on a busy 2-core machine.
    assert elapsed < 5.0, elapsed
    hang = [i for i in range(N) if i % 20 == 0]
    bad = [i for i in range(N) if i % 10 == 3]
    assert (len(hang), len(bad)) == (13, 26)
    assert result.errors == {"flaky": 39}
    values = result.per_component["flaky"].tolist()
    for i, text in enumerate(completions):
        expected = -1.0 if i in hang or i in bad else len(text) / 100
        assert abs(values[i] - expected) < 1e-6, (i, values[i], expected)
    assert abs(float(result.total[1]) - 2.0 * len(completions[1]) / 100) < 1e-6
    assert reward_metrics(result.per_component, result.errors)["rewards/flaky/errors"] == 39.0


def test_a_reward_that_hangs_on_every_sample_is_still_bounded():
    spec = RewardComponent(fn="faulty_rewards:flaky", timeout_s=0.1, fallback=None,
                           kwargs={"hang_s": 3.0})
    stack = RewardStack([build_component("flaky", spec)], num_workers=8, answer_format="hash")
    n = 32
    start = time.perf_counter()
    result = stack(["q"] * n, ["hang"] * n, ["a"] * n)
    elapsed = time.perf_counter() - start
    # batch limit 0.1 s x 32 = 3.2 s, then 32 calls x 0.1 s / 8 workers = 0.4 s
    assert elapsed < 6.0, elapsed
    assert result.errors == {"flaky": n}
    assert result.per_component["flaky"].isnan().all()  # fallback None: excluded
    assert result.total.tolist() == [0.0] * n
