"""Grade completions and build the eval report: grade_problem -> summarize -> write / render.

Every problem is graded the same way whether its completions were generated here or read
from a file: each sample's answer is extracted twice (strict = only the template's answer
format, e.g. `#### N`; flexible = any recognisable final answer) and compared with the gold
answer. The headline `accuracy` is the *flexible* one (mean over samples when n > 1);
`accuracy_strict` and `accuracy_flexible` are both always reported, since published numbers
swing with the extraction rule. pass@k and maj@k (see metrics.py) use flexible grading.

Flow: `grade_problems(problems, grader) -> rows`, `summarize(rows) -> report`, then
`write_report` and `print_report`. Files written by `write_report(out, report, rows)`:
    <out>/report.json    the report dict below
    <out>/samples.jsonl  one line per problem (id, question, gold, completions, predictions,
                         per-sample grades, `score_*` per-problem means used by `compare`)

Report keys: dataset, num_examples, num_samples, accuracy, accuracy_se, accuracy_strict,
accuracy_strict_se, accuracy_flexible, accuracy_flexible_se, pass@k / maj@k for each k,
format_rate, mean_completion_tokens (null when unknown), truncated_rate (null when unknown),
by_level, by_subject ({} unless the dataset has levels/subjects), plus whatever `meta` holds
(model, checkpoint, adapter_path, date, source, dropped (rows of the split left out, by
reason), config: template, extraction order, engine, max_new_tokens, greedy, temperature,
...).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from grpo_cli.evaluation import metrics


@dataclass
class Problem:
    """One problem to grade: its gold answer and n completions."""

    id: str
    gold: str
    completions: list[str]
    question: str = ""
    # Completion lengths in tokens / cut at max_new_tokens (None = unknown, e.g. from a file).
    tokens: Optional[list[int]] = None
    truncated: Optional[list[bool]] = None
    level: Optional[str] = None
    subject: Optional[str] = None


@dataclass
class Grader:
    """How completions are graded: plain functions, so tests can swap them."""

    # (completion, mode "strict" | "flexible") -> extracted answer or None
    extract: Callable[[str, str], Optional[str]]
    # (predicted answers, gold answers) -> equal? One call for a whole eval, so a slow
    # symbolic check can run in parallel.
    match_many: Callable[[Sequence[Optional[str]], Sequence[str]], list[bool]]
    # completion -> follows the prompt template's format?
    has_format: Callable[[str], bool]
    # Rendered in the report so readers know how answers were found.
    description: dict[str, Any] = field(default_factory=dict)


MODES = ("strict", "flexible")


def grade_problems(problems: Sequence[Problem], grader: Grader) -> list[dict[str, Any]]:
    """Grade every sample of every problem; returns the samples.jsonl rows."""
    rows: list[dict[str, Any]] = []
    for p in problems:
        row: dict[str, Any] = {"id": p.id, "question": p.question, "gold": p.gold,
                               "level": p.level, "subject": p.subject,
                               "completions": p.completions}
        for mode in MODES:
            row[f"pred_{mode}"] = [grader.extract(text, mode) for text in p.completions]
        rows.append(row)
    preds = [pred for row in rows for mode in MODES for pred in row[f"pred_{mode}"]]
    golds = [row["gold"] for row in rows for mode in MODES for _ in row[f"pred_{mode}"]]
    verdicts = iter(grader.match_many(preds, golds) if preds else [])
    for row, p in zip(rows, problems):
        for mode in MODES:
            # next() first: every prediction, None included, has one verdict to consume
            correct = [bool(next(verdicts)) and pred is not None
                       for pred in row[f"pred_{mode}"]]
            row[f"correct_{mode}"] = correct
            row[f"score_{mode}"] = metrics.mean([float(c) for c in correct])
        row["score"] = row["score_flexible"]
        row["format"] = [bool(grader.has_format(text)) for text in p.completions]
        row["tokens"] = p.tokens
        row["truncated"] = p.truncated
    return rows


def _accuracy_block(rows: list[dict], prefix: str = "") -> dict[str, float]:
    out = {}
    for key, score in (("accuracy", "score"), ("accuracy_strict", "score_strict"),
                       ("accuracy_flexible", "score_flexible")):
        values = [r[score] for r in rows]
        out[prefix + key] = metrics.mean(values)
        out[prefix + key + "_se"] = metrics.standard_error(values)
    return out


def _breakdown(rows: list[dict], key: str) -> dict[str, dict[str, float]]:
    """Accuracy per level / subject, sorted by name; {} when no row has that key."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r.get(key) is not None:
            groups.setdefault(str(r[key]), []).append(r)
    return {name: {"num_examples": len(g), **_accuracy_block(g)}
            for name, g in sorted(groups.items())}


def _mean_of_lists(rows: list[dict], key: str) -> Optional[float]:
    values = [float(v) for r in rows if r.get(key) is not None for v in r[key]]
    return metrics.mean(values) if values else None


def summarize(rows: list[dict], *, dataset: str, meta: Optional[dict] = None) -> dict[str, Any]:
    """The report dict from graded rows (all with the same number of samples)."""
    if not rows:
        raise ValueError("summarize needs at least one graded problem")
    n = len(rows[0]["completions"])
    report: dict[str, Any] = {"dataset": dataset, "num_examples": len(rows), "num_samples": n}
    report.update(_accuracy_block(rows))
    for k in metrics.ks_up_to(n):
        report[f"pass@{k}"] = metrics.mean(
            [metrics.pass_at_k(n, sum(r["correct_flexible"]), k) for r in rows])
    for k in metrics.ks_up_to(n):
        report[f"maj@{k}"] = metrics.mean([
            float(metrics.maj_at_k([metrics.normalize_answer(p) for p in r["pred_flexible"]],
                                   r["correct_flexible"], k)) for r in rows])
    report["format_rate"] = _mean_of_lists(rows, "format")
    report["mean_completion_tokens"] = _mean_of_lists(rows, "tokens")
    report["truncated_rate"] = _mean_of_lists(rows, "truncated")
    report["by_level"] = _breakdown(rows, "level")
    report["by_subject"] = _breakdown(rows, "subject")
    report.update(meta or {})
    return report


def _json_safe(value: Any) -> Any:
    """NaN / inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_report(out: Path, report: dict, rows: list[dict]) -> None:
    """Write <out>/report.json and <out>/samples.jsonl (one graded problem per line)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(_json_safe(report), indent=2) + "\n")
    with open(out / "samples.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(_json_safe(row)) + "\n")


def fmt(value: Any) -> str:
    """A report value as table text: rates as percentages, None as '-'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def pct(value: Optional[float], se: Optional[float] = None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    text = f"{100 * value:.1f}%"
    if se is not None and math.isfinite(se):
        text += f" ± {100 * se:.1f}"
    return text


def metric_rows(report: dict) -> list[tuple[str, str]]:
    """(name, text) pairs shown in the table, in a fixed order."""
    shown = [("accuracy", pct(report["accuracy"], report.get("accuracy_se"))),
             ("accuracy_strict", pct(report["accuracy_strict"], report.get("accuracy_strict_se"))),
             ("accuracy_flexible", pct(report["accuracy_flexible"],
                                       report.get("accuracy_flexible_se")))]
    shown += [(k, pct(v)) for k, v in report.items() if k.startswith(("pass@", "maj@"))]
    shown += [("format_rate", pct(report.get("format_rate"))),
              ("truncated_rate", pct(report.get("truncated_rate"))),
              ("mean_completion_tokens", fmt(report.get("mean_completion_tokens")))]
    if "failures" in report:  # code tasks (code_eval.py)
        shown.insert(3, ("tests_passed", pct(report.get("tests_passed"))))
        shown += [(f"samples {status}", pct(v)) for status, v in report["failures"].items()]
    return shown


def render_table(report: dict) -> Any:
    """A rich Table of the headline numbers and the level / subject breakdowns."""
    from rich.table import Table

    who = report.get("checkpoint") or report.get("model")
    title = (f"{report['dataset']}: {report['num_examples']} problems x "
             f"{report['num_samples']} sample(s)")
    caption = " | ".join(str(x) for x in (who, report.get("date")) if x)
    table = Table(title=title, caption=caption or None, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, text in metric_rows(report):
        table.add_row(name, text)
    for group in ("by_level", "by_subject"):
        for name, block in report.get(group, {}).items():
            table.add_row(f"{group[3:]} {name} (n={block['num_examples']})",
                          pct(block["accuracy"], block["accuracy_se"]))
    return table


def print_report(report: dict, console: Any = None) -> None:
    from rich.console import Console

    (console or Console()).print(render_table(report))
