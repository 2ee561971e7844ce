"""Reward-hacking and training-health checks on the stream of per-step metrics.

Pure logic, no I/O: `HealthMonitor.update(metrics)` takes one step's metrics dict (the names
of metrics.jsonl) and returns the warnings that fire at this step. Each warning carries the
numbers behind it, so the user can judge it without opening a chart.

Each check is a plain function `(history, thresholds) -> message | None` in `CHECKS`; the
message is the condition being true *now*. The monitor turns these level signals into
episodes: a check fires once when its condition becomes true, stays silent while it holds,
and re-arms only after the condition has been false for `rearm_steps` consecutive steps
(so a noisy signal hovering at its threshold does not fire every other step).

Windows compare moving averages, never single steps: one noisy batch of 4 prompts says
little. A metric that is missing or non-finite at a step is skipped, not counted as zero.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass
class HealthThresholds:
    """Defaults of every health check; each is a number the user may want to tune."""

    # Steps per moving-average window (recent window vs the one before it).
    window: int = 10
    # Steps whose average is the "early" baseline (length, entropy, repetition).
    early_steps: int = 10
    # Consecutive healthy steps after which a fired check may fire again.
    rearm_steps: int = 20
    # Reward components treated as format rewards (rewards/<name>/mean).
    format_components: tuple[str, ...] = ("format", "tag_count", "strict_format", "soft_format")
    # Format hacking: format reward up by more than this while accuracy falls by more than...
    format_rise: float = 0.1
    accuracy_drop: float = 0.05
    # Length collapse: recent mean length below this share of the early mean length.
    length_collapse_frac: float = 0.3
    # Most completions hit max_new_tokens: recent clipped_frac above this.
    clipped_frac_max: float = 0.5
    # KL (k3, per token) to the reference policy: recent mean above this.
    kl_max: float = 0.5
    kl_window: int = 5
    # frac_zero_std above this for `zero_std_steps` consecutive steps: the batch teaches nothing.
    zero_std_max: float = 0.6
    zero_std_steps: int = 10
    # Repetition (share of repeated 4-grams): recent mean above `repetition_min` and up by
    # more than `repetition_rise` over the early mean.
    repetition_min: float = 0.2
    repetition_rise: float = 0.1
    # Entropy collapse: recent mean entropy below this share of the early mean.
    entropy_collapse_frac: float = 0.25


@dataclass
class HealthWarning:
    """One fired check: its name and a one-line message with the numbers behind it."""

    name: str
    step: int
    message: str

    def __str__(self) -> str:
        return f"[health:{self.name}] step {self.step}: {self.message}"


class History:
    """The recent metric dicts plus the early baseline of each key."""

    def __init__(self, maxlen: int, early_steps: int) -> None:
        self.rows: deque[dict[str, float]] = deque(maxlen=maxlen)
        self.early_steps = early_steps
        self._early: dict[str, list[float]] = {}

    def add(self, metrics: dict[str, float]) -> None:
        row = {k: float(v) for k, v in metrics.items() if _finite(v)}
        self.rows.append(row)
        for key, value in row.items():
            early = self._early.setdefault(key, [])
            if len(early) < self.early_steps:
                early.append(value)

    def last(self, key: str, n: int, skip: int = 0) -> list[float]:
        """The last n finite values of key, ending `skip` values before the newest."""
        values = [row[key] for row in self.rows if key in row]
        end = len(values) - skip
        return values[max(0, end - n):end] if end > 0 else []

    def early_mean(self, key: str) -> Optional[float]:
        """Mean of the first `early_steps` values, once that many have been seen."""
        early = self._early.get(key, [])
        return _mean(early) if len(early) >= self.early_steps else None

    def count(self, key: str) -> int:
        return sum(1 for row in self.rows if key in row)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _window_pair(h: History, key: str, w: int) -> Optional[tuple[float, float]]:
    """(previous-window mean, recent-window mean) of key, or None without 2w values."""
    recent, previous = h.last(key, w), h.last(key, w, skip=w)
    if len(recent) < w or len(previous) < w:
        return None
    return _mean(previous), _mean(recent)


def check_format_hacking(h: History, t: HealthThresholds) -> Optional[str]:
    acc = _window_pair(h, "accuracy", t.window)
    if acc is None or acc[0] - acc[1] <= t.accuracy_drop:
        return None
    for name in t.format_components:
        fmt = _window_pair(h, f"rewards/{name}/mean", t.window)
        if fmt is not None and fmt[1] - fmt[0] > t.format_rise:
            return (f"possible reward hacking: rewards/{name}/mean rose {fmt[0]:.3f} -> "
                    f"{fmt[1]:.3f} while accuracy fell {acc[0]:.3f} -> {acc[1]:.3f} "
                    f"({t.window}-step averages); check samples/ for well-formatted wrong answers")
    return None


def check_length_collapse(h: History, t: HealthThresholds) -> Optional[str]:
    key = "completion_len/mean"
    early, recent = h.early_mean(key), h.last(key, t.window)
    if early is None or early <= 0 or h.count(key) < t.early_steps + t.window:
        return None
    now = _mean(recent)
    if now >= t.length_collapse_frac * early:
        return None
    return (f"completion length collapsed: {now:.1f} tokens over the last {t.window} steps vs "
            f"{early:.1f} early (< {t.length_collapse_frac:.0%}); the policy may be skipping "
            "its reasoning to game the reward")


def check_length_clipped(h: History, t: HealthThresholds) -> Optional[str]:
    recent = h.last("completion_len/clipped_frac", t.window)
    if len(recent) < t.window or _mean(recent) <= t.clipped_frac_max:
        return None
    return (f"{_mean(recent):.0%} of completions hit max_new_tokens over the last {t.window} "
            "steps; raise rollout.max_new_tokens, add a length penalty, or set "
            "algo.mask_truncated=true")


def check_kl(h: History, t: HealthThresholds) -> Optional[str]:
    recent = h.last("kl", t.kl_window)
    if len(recent) < t.kl_window or _mean(recent) <= t.kl_max:
        return None
    beta = h.last("beta", 1)
    beta_txt = f" (beta={beta[0]:g})" if beta else ""
    return (f"KL to the reference is {_mean(recent):.3f} over the last {t.kl_window} steps "
            f"(> {t.kl_max}){beta_txt}; the policy is drifting: lower optim.lr or raise "
            "algo.beta")


def check_zero_std(h: History, t: HealthThresholds) -> Optional[str]:
    recent = h.last("frac_zero_std", t.zero_std_steps)
    if len(recent) < t.zero_std_steps or min(recent) <= t.zero_std_max:
        return None
    return (f"frac_zero_std > {t.zero_std_max:.0%} for {t.zero_std_steps} steps "
            f"(mean {_mean(recent):.0%}): most groups have equal rewards and teach nothing; "
            "try a larger algo.num_generations, an easier data mix, or "
            "algo.dynamic_sampling=true")


def check_repetition(h: History, t: HealthThresholds) -> Optional[str]:
    early, recent = h.early_mean("repetition"), h.last("repetition", t.window)
    if early is None or h.count("repetition") < t.early_steps + t.window:
        return None
    now = _mean(recent)
    if now <= t.repetition_min or now - early <= t.repetition_rise:
        return None
    return (f"repetition rose to {now:.2f} (share of repeated 4-grams, last {t.window} steps) "
            f"from {early:.2f} early; completions are looping")


def check_entropy_collapse(h: History, t: HealthThresholds) -> Optional[str]:
    early, recent = h.early_mean("entropy"), h.last("entropy", t.window)
    if early is None or early <= 0 or h.count("entropy") < t.early_steps + t.window:
        return None
    now = _mean(recent)
    if now >= t.entropy_collapse_frac * early:
        return None
    return (f"entropy collapsed to {now:.3f} (last {t.window} steps) from {early:.3f} early "
            f"(< {t.entropy_collapse_frac:.0%}); exploration has stopped: raise "
            "rollout.temperature or lower optim.lr")


CheckFn = Callable[[History, HealthThresholds], Optional[str]]

CHECKS: dict[str, CheckFn] = {
    "format_hacking": check_format_hacking,
    "length_collapse": check_length_collapse,
    "length_clipped": check_length_clipped,
    "kl_high": check_kl,
    "zero_std": check_zero_std,
    "repetition": check_repetition,
    "entropy_collapse": check_entropy_collapse,
}


class HealthMonitor:
    """Feeds each step's metrics to every check and fires each once per episode."""

    def __init__(self, thresholds: Optional[HealthThresholds] = None,
                 checks: Optional[dict[str, CheckFn]] = None) -> None:
        self.t = thresholds or HealthThresholds()
        self.checks = dict(CHECKS if checks is None else checks)
        longest = max(2 * self.t.window, self.t.kl_window, self.t.zero_std_steps)
        self.history = History(maxlen=longest, early_steps=self.t.early_steps)
        self._active: dict[str, bool] = {name: False for name in self.checks}
        self._healthy_run: dict[str, int] = {name: 0 for name in self.checks}

    def update(self, step: int, metrics: dict[str, float]) -> list[HealthWarning]:
        """Add one step's metrics; return the warnings that start an episode at this step."""
        self.history.add(metrics)
        fired = []
        for name, check in self.checks.items():
            message = check(self.history, self.t)
            if message is None:
                self._healthy_run[name] += 1
                if self._healthy_run[name] >= self.t.rearm_steps:
                    self._active[name] = False
                continue
            self._healthy_run[name] = 0
            if not self._active[name]:
                self._active[name] = True
                fired.append(HealthWarning(name, step, message))
        return fired
