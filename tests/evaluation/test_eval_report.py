"""Grading and the report dict on a hand-sized case, with a toy grader (no rewards needed).

Toy grader: strict = the number after '####'; flexible = strict, else the last number;
format = strict found something. Two problems, four samples each:

  A (gold 4, level 1):  '#### 4' | 'it is 4' | '#### 5' | 'no idea'
      strict  4, -, 5, -  -> correct T F F F -> 0.25      flexible 4, 4, 5, -  -> T T F F -> 0.5
  B (gold 7, level 2):  '#### 1' | '#### 1' | 'so 7' | '#### 7'
      strict  1, 1, -, 7  -> correct F F F T -> 0.25      flexible 1, 1, 7, 7  -> F F T T -> 0.5

accuracy (flexible) = 0.5, accuracy_strict = 0.25, SE of [0.5, 0.5] = 0.
pass@1 = 0.5; pass@2 = 1 - C(2,2)/C(4,2) = 5/6 for both; pass@4 = 1.
maj@1: A '4' right, B '1' wrong -> 0.5.  maj@2: A ['4','4'] right, B ['1','1'] wrong -> 0.5.
maj@4: A '4' x2 beats '5' -> right; B '1' x2 ties '7' x2 -> '1' seen first -> wrong -> 0.5.
format_rate = (2 + 3) / 8 = 0.625; tokens mean (1+2+3+4 + 5+6+7+8) / 8 = 4.5.
"""

import json
import re

import pytest

from grpo_cli.evaluation.report import (
    Grader,
    Problem,
    grade_problems,
    render_table,
    summarize,
    write_report,
)


def _strict(text: str):
    found = re.findall(r"####\s*(\d+)", text)
    return found[-1] if found else None


def _extract(text: str, mode: str):
    answer = _strict(text)
    if answer is None and mode == "flexible":
        numbers = re.findall(r"\d+", text)
        answer = numbers[-1] if numbers else None
    return answer


TOY = Grader(extract=_extract, match_many=lambda ps, gs: [p == g for p, g in zip(ps, gs)],
             has_format=lambda t: _strict(t) is not None, description={"template": "hash"})

PROBLEMS = [
    Problem("A", "4", ["#### 4", "it is 4", "#### 5", "no idea"], question="2+2?",
            tokens=[1, 2, 3, 4], truncated=[False, False, False, True], level="1",
            subject="Algebra"),
    Problem("B", "7", ["#### 1", "#### 1", "so 7", "#### 7"], question="3+4?",
            tokens=[5, 6, 7, 8], truncated=[False] * 4, level="2", subject="Algebra"),
]


@pytest.fixture
def rows() -> list:
    return grade_problems(PROBLEMS, TOY)


def test_grade_problems_row(rows: list) -> None:
    a = rows[0]
    assert a["pred_strict"] == ["4", None, "5", None]
    assert a["pred_flexible"] == ["4", "4", "5", None]
    assert a["correct_strict"] == [True, False, False, False]
    assert a["correct_flexible"] == [True, True, False, False]
    assert (a["score_strict"], a["score_flexible"], a["score"]) == (0.25, 0.5, 0.5)
    assert a["format"] == [True, False, True, False]


def test_summarize_hand_case(rows: list) -> None:
    report = summarize(rows, dataset="toy", meta={"model": "m"})
    assert report["dataset"] == "toy" and report["model"] == "m"
    assert (report["num_examples"], report["num_samples"]) == (2, 4)
    assert report["accuracy"] == report["accuracy_flexible"] == 0.5
    assert report["accuracy_strict"] == 0.25
    assert report["accuracy_se"] == 0.0
    assert report["pass@1"] == pytest.approx(0.5)
    assert report["pass@2"] == pytest.approx(5 / 6)
    assert report["pass@4"] == pytest.approx(1.0)
    assert (report["maj@1"], report["maj@2"], report["maj@4"]) == (0.5, 0.5, 0.5)
    assert report["format_rate"] == pytest.approx(0.625)
    assert report["mean_completion_tokens"] == pytest.approx(4.5)
    assert report["truncated_rate"] == pytest.approx(1 / 8)
    assert set(report["by_level"]) == {"1", "2"}
    assert report["by_level"]["1"]["num_examples"] == 1
    assert report["by_level"]["2"]["accuracy_strict"] == 0.25
    assert report["by_subject"]["Algebra"]["accuracy"] == 0.5


def test_unknown_lengths_are_null_and_no_breakdown_without_levels() -> None:
    row = grade_problems([Problem("x", "1", ["#### 1"])], TOY)[0]
    report = summarize([row], dataset="toy")
    assert report["mean_completion_tokens"] is None and report["truncated_rate"] is None
    assert report["by_level"] == {} and report["by_subject"] == {}
    assert report["accuracy"] == 1.0 and report["accuracy_se"] == 0.0
    assert [k for k in report if k.startswith("pass@")] == ["pass@1"]


def test_write_report_files(tmp_path, rows: list) -> None:
    report = summarize(rows, dataset="toy")
    report["weird"] = float("nan")
    write_report(tmp_path / "out", report, rows)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["accuracy"] == 0.5 and saved["weird"] is None  # NaN is not JSON
    lines = (tmp_path / "out" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["A", "B"]
    assert json.loads(lines[1])["correct_flexible"] == [False, False, True, True]


def test_render_table_lists_metrics_and_breakdown(rows: list) -> None:
    from rich.console import Console

    console = Console(width=120, record=True, color_system=None)
    console.print(render_table(summarize(rows, dataset="toy", meta={"model": "m"})))
    text = console.export_text()
    for needle in ("accuracy_strict", "25.0%", "pass@2", "83.3%", "maj@4", "level 1 (n=1)",
                   "subject Algebra (n=2)"):
        assert needle in text
