"""Health checks: each fires on a synthetic stream made to trigger it, once per episode,
and none fires on a healthy run."""

from __future__ import annotations

import random

import pytest

from grpo_cli.tracking.health import CHECKS, HealthMonitor, HealthThresholds


def healthy(step: int, rng: random.Random) -> dict:
    """A run that learns: reward and accuracy rise, nothing collapses (small noise)."""
    progress = step / 100
    noise = lambda scale: rng.uniform(-scale, scale)  # noqa: E731
    return {
        "reward/mean": 0.3 + 0.4 * progress + noise(0.05),
        "rewards/format/mean": 0.6 + 0.2 * progress + noise(0.05),
        "rewards/correctness/mean": 0.3 + 0.3 * progress + noise(0.05),
        "accuracy": 0.3 + 0.3 * progress + noise(0.05),
        "completion_len/mean": 180 + 40 * progress + noise(20),
        "completion_len/clipped_frac": 0.05 + noise(0.03),
        "kl": 0.002 + 0.08 * progress + noise(0.001),
        "beta": 0.04,
        "frac_zero_std": 0.3 + noise(0.2),
        "repetition": 0.05 + noise(0.02),
        "entropy": 0.8 - 0.3 * progress + noise(0.05),
    }


def run(stream: list[dict], thresholds: HealthThresholds | None = None) -> list:
    monitor = HealthMonitor(thresholds)
    fired = []
    for step, metrics in enumerate(stream):
        fired.extend(monitor.update(step, metrics))
    return fired


def with_overrides(n: int, overrides) -> list[dict]:
    """n healthy steps with overrides(step) -> dict applied on top."""
    rng = random.Random(0)
    return [{**healthy(s, rng), **overrides(s)} for s in range(n)]


def test_healthy_run_is_silent() -> None:
    assert run(with_overrides(200, lambda s: {})) == []


def test_missing_and_nan_metrics_are_skipped() -> None:
    stream = [{"kl": float("nan"), "entropy": None} for _ in range(50)]
    assert run(stream) == []


TRIGGERS = {
    # Format reward climbs 0.5 -> 0.9 while accuracy falls 0.6 -> 0.3.
    "format_hacking": lambda s: ({"rewards/format/mean": 0.5, "accuracy": 0.6} if s < 20 else
                                 {"rewards/format/mean": 0.9, "accuracy": 0.3}),
    # Length 200 early, then 40 (20% of early).
    "length_collapse": lambda s: {"completion_len/mean": 200.0 if s < 15 else 40.0},
    "length_clipped": lambda s: {"completion_len/clipped_frac": 0.1 if s < 20 else 0.8},
    "kl_high": lambda s: {"kl": 0.01 if s < 20 else 1.5},
    "zero_std": lambda s: {"frac_zero_std": 0.2 if s < 20 else 0.95},
    "repetition": lambda s: {"repetition": 0.05 if s < 15 else 0.45},
    "entropy_collapse": lambda s: {"entropy": 0.9 if s < 15 else 0.05},
}


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_each_warning_fires_once_on_its_trigger(name: str) -> None:
    fired = run(with_overrides(80, TRIGGERS[name]))
    assert [w.name for w in fired] == [name], "fires once, and no other check fires"
    assert any(ch.isdigit() for ch in fired[0].message), "the message carries the numbers"


def test_trigger_set_covers_every_check() -> None:
    assert set(TRIGGERS) == set(CHECKS)


def test_messages_hold_the_numbers() -> None:
    fired = run(with_overrides(60, TRIGGERS["format_hacking"]))
    # Fires at step 22: recent window = steps 13..22 (7 old + 3 new values), previous = 3..12.
    # format: (7 * 0.5 + 3 * 0.9) / 10 = 0.62 vs 0.5 (rise 0.12 > 0.1);
    # accuracy: (7 * 0.6 + 3 * 0.3) / 10 = 0.51 vs 0.6 (drop 0.09 > 0.05).
    assert fired[0].step == 22
    assert "0.500 -> 0.620" in fired[0].message and "0.600 -> 0.510" in fired[0].message
    fired = run(with_overrides(60, TRIGGERS["zero_std"]))
    assert "algo.dynamic_sampling=true" in fired[0].message
    fired = run(with_overrides(60, TRIGGERS["kl_high"]))
    # Step 21: (3 * 0.01 + 2 * 1.5) / 5 = 0.606 > 0.5.
    assert "0.606" in fired[0].message and "beta=0.04" in fired[0].message
    assert str(fired[0]).startswith("[health:kl_high] step ")


def test_fires_again_only_after_a_healthy_episode() -> None:
    t = HealthThresholds(kl_window=5, rearm_steps=20)

    def kl(pattern: list[tuple[int, float]]) -> list[dict]:
        return [{"kl": value} for n, value in pattern for _ in range(n)]

    # 10 healthy, 10 high, 5 healthy (< rearm_steps), 10 high: one episode.
    assert len(run(kl([(10, 0.0), (10, 2.0), (5, 0.0), (10, 2.0)]), t)) == 1
    # 10 healthy, 10 high, 30 healthy (>= rearm_steps), 10 high: two episodes.
    fired = run(kl([(10, 0.0), (10, 2.0), (30, 0.0), (10, 2.0)]), t)
    # The 5-step window mean first exceeds 0.5 with two values of 2.0: (0+0+0+2+2)/5 = 0.8.
    assert [w.step for w in fired] == [11, 51]
