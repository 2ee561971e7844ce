"""`eval.completions=FILE`: the JSONL format, its one-line errors, and grading GSM8K's own
gold solutions (accuracy 1.0) against a shifted pairing (about 0), with no model loaded."""

import json
import re
from pathlib import Path

import pytest

from grpo_cli.config.schema import GrpoConfig
from grpo_cli.data.record import Record
from grpo_cli.errors import UserError
from grpo_cli.evaluation.completions import parse_row, read_completions, to_problems
from grpo_cli.evaluation.runner import run_eval

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
GSM8K_TEST = DATA / "gsm8k" / "test.jsonl"
N_GSM8K = 1319  # the whole test split: plain numbers grade in microseconds


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_parse_row_forms() -> None:
    one = parse_row({"id": "a", "completion": "#### 4"}, "f:1")
    assert one.completions == ["#### 4"] and one.id == "a" and one.answer is None
    many = parse_row({"question": "q", "answer": 4, "completions": ["x", "y"],
                      "tokens": [3, 4], "truncated": [False, True]}, "f:2")
    assert many.answer == "4" and many.tokens == [3, 4] and many.truncated == [False, True]
    assert parse_row({"answer": "1", "completion": "c", "tokens": 7}, "f:3").tokens == [7]


@pytest.mark.parametrize(("obj", "message"), [
    ({"id": "a"}, r"f\.jsonl:3: needs exactly one of 'completion'"),
    ({"id": "a", "completion": "x", "completions": ["y"]}, "needs exactly one of"),
    ({"completion": "x"}, r"f\.jsonl:3: missing 'answer' \(gold\) and no 'id' or 'question'"),
    ({"answer": "1", "completions": []}, "non-empty list of strings"),
    ({"answer": "1", "completion": 5}, "'completion' must be a string"),
    ({"answer": ["1"], "completion": "x"}, "'answer' must be a string"),
    ({"answer": "1", "completions": ["a", "b"], "tokens": [1]}, "list of 2 int values"),
    (["not", "an", "object"], "must be a JSON object"),
])
def test_parse_row_errors(obj, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_row(obj, "f.jsonl:3")


def test_read_completions_errors_name_file_and_line(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "c.jsonl", [{"answer": "1", "completion": "x"}, "",
                                               "{broken"])
    with pytest.raises(UserError, match=r"c\.jsonl:3: not valid JSON"):
        read_completions(path)
    path = _write_jsonl(tmp_path / "d.jsonl", [{"answer": "1", "completions": ["a", "b"]},
                                               {"answer": "1", "completion": "a"}])
    with pytest.raises(UserError, match=r"d\.jsonl:2: has 1 completion\(s\) but the first row"):
        read_completions(path)
    with pytest.raises(UserError, match="no such file"):
        read_completions(tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match="has no rows"):
        read_completions(_write_jsonl(tmp_path / "e.jsonl", [""]))


def test_rows_match_dataset_records_by_id_then_question(tmp_path: Path) -> None:
    records = [Record("r1", [{"role": "user", "content": "What is 2+2?"}], "4",
                      {"level": 2, "subject": "Algebra", "source": "t"}),
               Record("r2", [{"role": "user", "content": "What is 3+4?"}], "7",
                      {"level": None, "subject": None, "source": "t"})]
    rows = read_completions(_write_jsonl(tmp_path / "c.jsonl", [
        {"id": "r1", "completion": "#### 4"},
        {"question": "  What is 3+4? ", "completion": "#### 7"},
        {"question": "own", "answer": "9", "completion": "#### 9", "level": "5"}]))
    problems = to_problems(rows, records, "toy")
    assert [(p.id, p.gold, p.level, p.subject) for p in problems] == [
        ("r1", "4", "2", "Algebra"), ("r2", "7", None, None), ("line-2", "9", "5", None)]
    assert problems[0].question == "What is 2+2?"
    unmatched = read_completions(_write_jsonl(tmp_path / "u.jsonl", [
        {"id": "nope", "completion": "x"}]))
    with pytest.raises(UserError, match=r"u\.jsonl:1: no row of toy matches id 'nope' \(its "
                                        r"ids look like 'r1', 'r2', \.\.\.\)"):
        to_problems(unmatched, records, "toy")


def _gsm8k_rows() -> list:
    if not GSM8K_TEST.is_file():
        pytest.skip(f"{GSM8K_TEST} is missing")
    rows = [json.loads(line) for line in GSM8K_TEST.read_text().splitlines()[:N_GSM8K]]
    for row in rows:
        row["gold"] = re.search(r"####\s*(.+)$", row["answer"]).group(1).replace(",", "")
    return rows


def cfg_file(tmp_path: Path, name: str) -> str:
    return str(tmp_path / f"{name}.jsonl")


def _grade(tmp_path: Path, name: str, lines: list) -> dict:
    cfg = GrpoConfig()
    cfg.data.name, cfg.data.template = "gsm8k", "hash"
    cfg.eval.completions = str(_write_jsonl(tmp_path / f"{name}.jsonl", lines))
    cfg.eval.out = str(tmp_path / name)
    cfg.logger.console = "quiet"
    return run_eval(cfg)


def test_gsm8k_gold_solutions_grade_perfectly(tmp_path: Path) -> None:
    rows = _gsm8k_rows()
    report = _grade(tmp_path, "gold", [{"question": r["question"], "completion": r["answer"],
                                        "answer": r["gold"]} for r in rows])
    assert report["num_examples"] == N_GSM8K and report["num_samples"] == 1
    assert report["accuracy_flexible"] == 1.0
    assert report["accuracy_strict"] == 1.0  # every solution ends with '#### N'
    assert report["format_rate"] == 1.0
    assert report["mean_completion_tokens"] is None  # not in the file
    saved = json.loads((tmp_path / "gold" / "report.json").read_text())
    assert saved["accuracy"] == 1.0 and saved["source"].startswith("completions file")
    assert saved["model"] == cfg_file(tmp_path, "gold")  # not the configured model's name
    with pytest.raises(UserError, match="already holds a report"):  # and never overwritten
        _grade(tmp_path, "gold", [{"question": "q", "completion": "#### 1", "answer": "1"}])
    assert len((tmp_path / "gold" / "samples.jsonl").read_text().splitlines()) == N_GSM8K


def test_gsm8k_shifted_pairing_grades_near_zero(tmp_path: Path) -> None:
    rows = _gsm8k_rows()
    shifted = [{"question": r["question"], "completion": rows[(i + 1) % len(rows)]["answer"],
                "answer": r["gold"]} for i, r in enumerate(rows)]
    report = _grade(tmp_path, "shifted", shifted)
    assert report["accuracy_flexible"] < 0.05 and report["accuracy_strict"] < 0.05


def test_gsm8k_rows_matched_through_the_dataset(tmp_path: Path) -> None:
    rows = _gsm8k_rows()
    cfg = GrpoConfig()
    cfg.data.name, cfg.data.template, cfg.data.path = "gsm8k", "hash", str(DATA / "gsm8k")
    cfg.eval.completions = str(_write_jsonl(tmp_path / "q.jsonl", [
        {"question": r["question"], "completions": [r["answer"], "#### -1"]} for r in rows[:50]]))
    cfg.eval.out = str(tmp_path / "q")
    cfg.logger.console = "quiet"
    report = run_eval(cfg)
    assert report["num_samples"] == 2
    assert report["accuracy"] == 0.5  # one right and one wrong sample per problem
    assert report["pass@2"] == 1.0 and report["pass@1"] == 0.5
    assert report["maj@2"] == 1.0  # 1-1 tie: the first sample (the gold solution) wins
