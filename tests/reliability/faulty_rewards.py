"""Reward functions for the reliability tests, imported by `grpo train` via PYTHONPATH."""

from __future__ import annotations

import time


def digit_share(prompts, completions, answers, **kwargs):
    """A toy reward: the share of completion characters that are digits."""
    return [sum(c.isdigit() for c in text) / max(len(text), 1) for text in completions]


def wrong_signature(completions):
    """Not a reward: it takes no (prompts, completions, answers, **metadata)."""
    return [0.0 for _ in completions]


def flaky(prompts, completions, answers, hang_s: float = 1.0, **kwargs):
    """'raise-*' completions raise, 'hang-*' ones sleep `hang_s`; the rest score len / 100."""
    out = []
    for text in completions:
        if text.startswith("raise"):
            raise ValueError(f"cannot grade {text!r}")
        if text.startswith("hang"):
            time.sleep(hang_s)
        out.append(len(text) / 100)
    return out


def half_constant(prompts, completions, answers, **kwargs):
    """Digit share for prompts of even length, 0 for the others: about half of the groups
    have zero variance, unevenly across ranks (dynamic sampling refills them)."""
    return [sum(c.isdigit() for c in text) / max(len(text), 1) if len(p) % 2 == 0 else 0.0
            for p, text in zip(prompts, completions)]
