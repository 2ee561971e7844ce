"""Which sampled completions `grpo sample` keeps, and the summary of a sampling run.

Pure functions on plain values (no model, no files), so the rules are tested on hand-made
numbers:

    select(samples, rule)   the kept completions of one problem, highest total first
    summarize(done)         problems with >= 1 kept, kept per problem, reward distribution

Rules (`sample.keep`):
- correct:   the correctness reward accepts the completion (its value is 1.0);
- best:      the completion's total is the highest of its problem (ties all qualify);
- threshold: total >= sample.threshold.
Then, highest total first (sample order breaks ties), at most `sample.max_per_problem` are
kept, and with `sample.dedupe` a text already kept for the problem (whitespace collapsed) is
skipped.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Scored:
    """One sampled completion of a problem and its rewards."""

    index: int  # which of the problem's samples (0 .. num_samples - 1)
    text: str
    total: float  # the reward stack's weighted total
    rewards: dict[str, Optional[float]]  # component -> value (None: not applicable)
    correct: Optional[bool]  # the correctness component's verdict (None: no verdict)
    tokens: int
    truncated: bool


@dataclass(frozen=True)
class KeepRule:
    keep: str  # correct | best | threshold
    threshold: Optional[float]
    max_per_problem: int
    dedupe: bool


def _qualifies(samples: Sequence[Scored], rule: KeepRule) -> list[Scored]:
    if rule.keep == "correct":
        return [s for s in samples if s.correct]
    if rule.keep == "best":
        best = max((s.total for s in samples), default=None)
        return [s for s in samples if s.total == best]
    if rule.keep == "threshold":
        return [s for s in samples if s.total >= rule.threshold]
    raise ValueError(f"unknown keep rule {rule.keep!r}")


def _normal(text: str) -> str:
    return " ".join(text.split())


def select(samples: Sequence[Scored], rule: KeepRule) -> list[Scored]:
    """The kept completions of one problem, highest total first (see the module docstring)."""
    kept: list[Scored] = []
    seen: set[str] = set()
    for s in sorted(_qualifies(samples, rule), key=lambda s: (-s.total, s.index)):
        if len(kept) == rule.max_per_problem:
            break
        if rule.dedupe and _normal(s.text) in seen:
            continue
        seen.add(_normal(s.text))
        kept.append(s)
    return kept


def _distribution(values: Sequence[float]) -> dict[str, Optional[float]]:
    if not values:
        return {"count": 0, "mean": None, "min": None, "p10": None, "p50": None, "p90": None,
                "max": None}
    ordered = sorted(values)

    def quantile(q: float) -> float:  # nearest rank
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"count": len(ordered), "mean": statistics.fmean(ordered), "min": ordered[0],
            "p10": quantile(0.1), "p50": quantile(0.5), "p90": quantile(0.9),
            "max": ordered[-1]}


def summarize(done: Sequence[dict]) -> dict:
    """The summary of finished problems: each a done-file row with `totals` (every sample's
    total), `kept_totals` and `correct` (each sample's verdict, None = none)."""
    per_problem = Counter(len(d["kept_totals"]) for d in done)
    verdicts = [c for d in done for c in d["correct"] if c is not None]
    return {
        "problems": len(done),
        "problems_with_kept": sum(1 for d in done if d["kept_totals"]),
        "kept": sum(len(d["kept_totals"]) for d in done),
        "kept_per_problem": {str(k): per_problem[k] for k in sorted(per_problem)},
        "samples": sum(len(d["totals"]) for d in done),
        "correct_rate": statistics.fmean(verdicts) if verdicts else None,
        "reward_all": _distribution([t for d in done for t in d["totals"]]),
        "reward_kept": _distribution([t for d in done for t in d["kept_totals"]]),
    }


def format_summary(summary: dict) -> str:
    """The summary as a few lines for the console."""
    def dist(d: dict) -> str:
        if not d["count"]:
            return "none"
        return (f"mean {d['mean']:.3f}  min {d['min']:.3f}  p10 {d['p10']:.3f}  "
                f"p50 {d['p50']:.3f}  p90 {d['p90']:.3f}  max {d['max']:.3f}")

    rate = summary["correct_rate"]
    return "\n".join([
        f"problems: {summary['problems']}, with >= 1 kept: {summary['problems_with_kept']}, "
        f"kept: {summary['kept']} of {summary['samples']} samples"
        + ("" if rate is None else f" (correct: {rate:.1%})"),
        "kept per problem: " + ", ".join(f"{k}: {n}" for k, n in
                                         summary["kept_per_problem"].items()),
        f"reward, all samples: {dist(summary['reward_all'])}",
        f"reward, kept:        {dist(summary['reward_kept'])}"])
