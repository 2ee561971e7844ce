"""`compare=`: two synthetic report folders, paired and unpaired differences, bad input.

Per-problem flexible scores: A = [1, 0, 1, 0] (0.5), B = [1, 1, 1, 0] (0.75).
Paired: diffs [0, 1, 0, 0] -> +0.25, population var 0.1875, SE sqrt(0.1875/4) = 0.2165.
Unpaired: SE_A = sqrt(.25/4) = 0.25, SE_B = sqrt(.1875/4) = 0.2165,
          SE = sqrt(0.0625 + 0.046875) = 0.3307.
"""

import json
import math
from pathlib import Path

import pytest

from grpo_cli.errors import UserError
from grpo_cli.evaluation.compare import (
    accuracy_difference,
    load_report,
    run_compare,
)
from grpo_cli.evaluation.metrics import standard_error


def _write(folder: Path, scores: list, *, samples: bool = True, dataset: str = "gsm8k") -> str:
    folder.mkdir(parents=True)
    acc = sum(scores) / len(scores)
    se = standard_error(scores)
    report = {"dataset": dataset, "num_examples": len(scores), "num_samples": 1,
              "accuracy": acc, "accuracy_se": se, "accuracy_strict": acc,
              "accuracy_strict_se": se, "accuracy_flexible": acc, "accuracy_flexible_se": se,
              "pass@1": acc, "maj@1": acc, "format_rate": 1.0, "truncated_rate": 0.0,
              "mean_completion_tokens": 100.0, "model": f"model-{folder.name}", "date": "today"}
    (folder / "report.json").write_text(json.dumps(report))
    if samples:
        with open(folder / "samples.jsonl", "w") as f:
            for i, s in enumerate(scores):
                f.write(json.dumps({"id": f"p{i}", "score": s, "score_strict": s,
                                    "score_flexible": s}) + "\n")
    return str(folder)


def test_paired_difference_from_samples(tmp_path: Path) -> None:
    a = load_report(_write(tmp_path / "a", [1, 0, 1, 0]))
    b = load_report(_write(tmp_path / "b", [1, 1, 1, 0]))
    diff, se, how = accuracy_difference(a, b, "accuracy")
    assert diff == pytest.approx(0.25)
    assert se == pytest.approx(math.sqrt(0.1875 / 4))
    assert how == "paired n=4"


def test_unpaired_difference_without_samples(tmp_path: Path) -> None:
    a = load_report(_write(tmp_path / "a", [1, 0, 1, 0]))
    b = load_report(_write(tmp_path / "b", [1, 1, 1, 0], samples=False))
    diff, se, how = accuracy_difference(a, b, "accuracy_strict")
    assert diff == pytest.approx(0.25)
    assert se == pytest.approx(math.sqrt(0.0625 + 0.046875))
    assert how == "unpaired"


def test_compare_text(tmp_path: Path) -> None:
    text = run_compare([_write(tmp_path / "a", [1, 0, 1, 0]),
                        _write(tmp_path / "b", [1, 1, 1, 0])])
    assert "50.0%" in text and "75.0%" in text
    assert "+25.0 ± 21.7" in text  # paired
    assert "paired n=4" in text
    assert "A = " in text and "model-b" in text


def test_compare_three_reports_and_dataset_warning(tmp_path: Path) -> None:
    text = run_compare([_write(tmp_path / "a", [1, 0, 1, 0]),
                        _write(tmp_path / "b", [1, 1, 1, 0], samples=False),
                        _write(tmp_path / "c", [0, 0, 0, 0], dataset="math")])
    assert "+25.0 ± 33.1" in text  # unpaired: b has no samples.jsonl
    assert "-50.0 ± 25.0" in text  # c - a: another dataset, so unpaired sqrt(.25^2 + 0)
    assert "different datasets" in text


def test_significant_difference_is_starred(tmp_path: Path) -> None:
    n = 100
    text = run_compare([_write(tmp_path / "a", [0] * n),
                        _write(tmp_path / "b", [1] * 60 + [0] * 40)])
    assert "+60.0 ± 4.9 *" in text  # sqrt(.24/100) = 0.049, z = 12


def test_compare_bad_input(tmp_path: Path) -> None:
    good = _write(tmp_path / "a", [1, 0])
    with pytest.raises(UserError, match="two or more"):
        run_compare([good])
    with pytest.raises(UserError, match="does not exist"):
        run_compare([good, str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no report.json"):
        run_compare([good, str(tmp_path / "empty")])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        run_compare([good, str(tmp_path / "bad")])
