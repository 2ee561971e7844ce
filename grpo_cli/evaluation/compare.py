"""`grpo eval "compare='A,B[,C...]'"`: reports side by side, with differences and their SEs.

A and B are report folders (or their report.json). The quotes keep Hydra from reading the
comma as a sweep over values.

The first report is the baseline; every other column shows its value and its difference
from the baseline. For the three accuracies the difference carries a standard error:

- paired, when both folders are on the same dataset, have samples.jsonl with per-problem
  scores and share problem ids:
  the mean and SE of the per-problem differences over the shared problems (much tighter than
  unpaired, because both models face the same hard and easy problems);
- unpaired otherwise: report(B) - report(A) with SE sqrt(se_A^2 + se_B^2).

A difference whose |diff / SE| exceeds 1.96 is marked `*` (about 95% two-sided); the footer
says which comparison was used, and warns when the reports differ in a setting that does not
depend on the model (SETTINGS: generation length, sampling, samples per problem, split,
answer extraction): such a difference moves the numbers by itself. Other metrics (pass@k,
maj@k, rates) show plain differences.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from grpo_cli.errors import UserError
from grpo_cli.evaluation import metrics
from grpo_cli.evaluation.report import metric_rows

ACCURACY_SCORES = {"accuracy": "score", "accuracy_strict": "score_strict",
                   "accuracy_flexible": "score_flexible"}
Z_95 = 1.96
# Model-independent settings of a report: (name shown, where it is in report.json).
SETTINGS = (("max_new_tokens", ("config", "max_new_tokens")),
            ("greedy", ("config", "greedy")), ("temperature", ("config", "temperature")),
            ("top_p", ("config", "top_p")), ("top_k", ("config", "top_k")),
            ("num_samples", ("num_samples",)), ("test_split", ("config", "test_split")),
            ("few_shot", ("config", "few_shot")),
            ("extraction_order", ("config", "extraction_order")))


@dataclass
class LoadedReport:
    label: str
    report: dict
    # problem id -> {"score": .., "score_strict": .., "score_flexible": ..}; None = no samples
    per_problem: Optional[dict[str, dict[str, float]]]


def _read_per_problem(path: Path) -> Optional[dict[str, dict[str, float]]]:
    if not path.is_file():
        return None
    scores = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if "id" not in row or any(row.get(k) is None for k in ACCURACY_SCORES.values()):
                return None
            scores[str(row["id"])] = {k: float(row[k]) for k in ACCURACY_SCORES.values()}
    return scores or None


def load_report(path: str) -> LoadedReport:
    """A report folder (or its report.json) and, when present, its per-problem scores."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"compare: {path} does not exist (give eval report folders)")
    report_file = p / "report.json" if p.is_dir() else p
    if not report_file.is_file():
        raise UserError(f"compare: {path} has no report.json (run grpo eval first)")
    try:
        report = json.loads(report_file.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"compare: {report_file} is not valid JSON ({err.msg})") from None
    if not isinstance(report, dict) or "accuracy" not in report:
        raise UserError(f"compare: {report_file} is not an eval report (no 'accuracy')")
    try:
        per_problem = _read_per_problem(report_file.parent / "samples.jsonl")
    except json.JSONDecodeError:
        per_problem = None
    return LoadedReport(path, report, per_problem)


def accuracy_difference(a: LoadedReport, b: LoadedReport, key: str) -> tuple[float, float, str]:
    """(b - a, SE, how) for one accuracy key; how = 'paired n=..' or 'unpaired'."""
    score = ACCURACY_SCORES[key]
    same_dataset = a.report.get("dataset") == b.report.get("dataset")
    if a.per_problem and b.per_problem and same_dataset:
        shared = [pid for pid in a.per_problem if pid in b.per_problem]
        if shared:
            diff, se = metrics.paired_difference([a.per_problem[i][score] for i in shared],
                                                 [b.per_problem[i][score] for i in shared])
            return diff, se, f"paired n={len(shared)}"
    ra, rb = a.report, b.report
    se = metrics.unpaired_se(ra.get(f"{key}_se") or 0.0, rb.get(f"{key}_se") or 0.0)
    return rb[key] - ra[key], se, "unpaired"


def _setting(report: dict, where: tuple[str, ...]):
    value = report
    for key in where:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def setting_differences(reports: list[dict]) -> list[str]:
    """'name A=.. B=..' for each model-independent setting the reports disagree on (a value
    a report does not know, e.g. max_new_tokens of a completions file, is left out)."""
    out = []
    for name, where in SETTINGS:
        values = [_setting(r, where) for r in reports]
        known = [v for v in values if v is not None]
        if any(v != known[0] for v in known):
            shown = " ".join(f"{chr(ord('A') + i) if i < 26 else i}={v}"
                             for i, v in enumerate(values) if v is not None)
            out.append(f"{name} {shown}")
    return out


def _signed_pct(value: float, se: Optional[float] = None) -> str:
    text = f"{100 * value:+.1f}"
    if se is not None:
        text += f" ± {100 * se:.1f}"
        if se > 0 and abs(value / se) > Z_95:
            text += " *"
    return text


def _plain_difference(key: str, a: dict, b: dict) -> str:
    va, vb = a.get(key), b.get(key)
    if not isinstance(va, (int, float)) or not isinstance(vb, (int, float)):
        return "-"
    if not (math.isfinite(va) and math.isfinite(vb)):
        return "-"
    return f"{vb - va:+.1f}" if key == "mean_completion_tokens" else _signed_pct(vb - va)


def _values(report: dict) -> dict[str, str]:
    return dict(metric_rows(report))


def compare_reports(loaded: list[LoadedReport], width: int = 140) -> str:
    """The side-by-side table and its footer, as text."""
    from rich.console import Console
    from rich.table import Table

    base = loaded[0]
    table = Table(title="grpo eval compare (differences vs A; * = |diff| > 1.96 SE)")
    table.add_column("metric")
    names = [chr(ord("A") + i) if i < 26 else str(i) for i in range(len(loaded))]
    for i, name in enumerate(names):
        table.add_column(name, justify="right")
        if i:
            table.add_column(f"{name} - A (pts)", justify="right")
    keys = [k for k, _ in metric_rows(base.report)]
    for other in loaded[1:]:
        keys += [k for k, _ in metric_rows(other.report) if k not in keys]
    hows: dict[str, str] = {}
    values = [_values(r.report) for r in loaded]
    for key in keys:
        cells = [key, values[0].get(key, "-")]
        for i, other in enumerate(loaded[1:], start=1):
            cells.append(values[i].get(key, "-"))
            if key in ACCURACY_SCORES and key in other.report and key in base.report:
                diff, se, how = accuracy_difference(base, other, key)
                hows[names[i]] = how
                cells.append(_signed_pct(diff, se))
            else:
                cells.append(_plain_difference(key, base.report, other.report))
        table.add_row(*cells)
    table.add_row("num_examples", *[c for i, r in enumerate(loaded) for c in (
        [str(r.report.get("num_examples", "-"))] + ([""] if i else []))])
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, color_system=None)
    console.print(table)
    for name, r in zip(names, loaded):
        rep = r.report
        console.print(f"{name} = {r.label}: {rep.get('dataset', '?')}, "
                      f"{rep.get('checkpoint') or rep.get('model') or '?'}, {rep.get('date', '')}")
    for name, how in hows.items():
        console.print(f"{name} - A accuracy: {how}"
                      + (" (per-problem differences)" if how.startswith("paired") else
                         " (no shared per-problem results: SEs added in quadrature)"))
    differ = setting_differences([r.report for r in loaded])
    if differ:
        console.print("warning: the reports used different eval settings, which move the "
                      "numbers by themselves: " + "; ".join(differ))
    datasets = {r.report.get("dataset") for r in loaded}
    if len(datasets) > 1:
        console.print("warning: the reports are on different datasets: "
                      + ", ".join(map(str, sorted(datasets, key=str))))
    return buf.getvalue()


def run_compare(paths: list[str]) -> str:
    """Load two or more report folders and return the comparison text (the CLI prints it)."""
    paths = [p.strip() for p in paths if p.strip()]
    if len(paths) < 2:
        raise UserError("compare= needs two or more report folders, comma-separated and quoted "
                        "(e.g. \"compare='outputs/eval/base/gsm8k,outputs/run/eval/gsm8k'\")")
    return compare_reports([load_report(p) for p in paths])


__all__ = ["LoadedReport", "load_report", "accuracy_difference", "compare_reports",
           "run_compare"]
