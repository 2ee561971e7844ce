"""One adapter per dataset family: how a raw row becomes an :class:`Example`.

An adapter reads fixed field names (the ``jsonl`` adapter reads ``data.question_field`` and
``data.answer_field``), extracts the gold final answer and keeps the worked solution for
few-shot prompts. A row without a required field is a UserError naming its file and line; a
row whose gold answer cannot be extracted is dropped and counted (the returned string is the
reason). Hub and local rows have the same fields, so both go through the same function.

Hub defaults:

- ``gsm8k``: ``openai/gsm8k``, config ``main``.
- ``math``: ``DigitalLearningGmbH/MATH-lighteval`` (all seven subjects in one config, the
  original train 7500 / test 5000 split, fields problem, level, type, solution).
  ``EleutherAI/hendrycks_math`` has the same rows but one config per subject.
- ``math500``: ``HuggingFaceH4/MATH-500`` (test split only; uses its ``answer`` field).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from grpo_cli.config.schema import DataConfig
from grpo_cli.data.record import Example
from grpo_cli.data.sources import Row
from grpo_cli.errors import UserError
from grpo_cli.rewards.extract import final_boxed, hash_answer

NO_GOLD = "no_gold_answer"
EMPTY_QUESTION = "empty_question"
_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations: 48/2 = <<48/2=24>>24
_LEVEL = re.compile(r"-?\d+")

Converted = Union[Example, str]  # an Example, or the reason the row was dropped


def require(row: Row, name: str) -> Any:
    """The value of a required field, or a UserError naming the row and the fields it has."""
    if name not in row.data:
        present = ", ".join(map(str, row.data)) or "none"
        raise UserError(f"{row.where}: missing field '{name}' (fields present: {present})")
    return row.data[name]


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _level(value: Any) -> Optional[int]:
    """'Level 3' or 3 -> 3; 'Level ?' or missing -> None."""
    if isinstance(value, int):
        return value
    found = _LEVEL.search(_text(value))
    return int(found.group()) if found else None


def _meta(source: str, subject: Any = None, level: Any = None, **extra: Any) -> dict[str, Any]:
    subject_text = _text(subject)
    return {"source": source, "subject": subject_text or None, "level": _level(level), **extra}


def _gsm8k(row: Row, split: str, cfg: DataConfig) -> Converted:
    question, answer = _text(require(row, "question")), _text(require(row, "answer"))
    gold = hash_answer(answer)
    if not question:
        return EMPTY_QUESTION
    if not gold:
        return NO_GOLD
    reasoning = _CALCULATOR.sub("", answer.rsplit("####", 1)[0]).strip()
    return Example(f"gsm8k/{split}/{row.index}", question, gold, reasoning or None,
                   _meta("gsm8k"))


def _math(row: Row, split: str, cfg: DataConfig) -> Converted:
    question, solution = _text(require(row, "problem")), _text(require(row, "solution"))
    gold = final_boxed(solution)
    if not question:
        return EMPTY_QUESTION
    if not gold:
        return NO_GOLD
    row_id = _text(row.data.get("unique_id")) or f"math/{split}/{row.index}"
    return Example(row_id, question, gold, solution,
                   _meta("math", row.data.get("type"), row.data.get("level")))


def _math500(row: Row, split: str, cfg: DataConfig) -> Converted:
    question, gold = _text(require(row, "problem")), _text(require(row, "answer"))
    if not question:
        return EMPTY_QUESTION
    if not gold:
        return NO_GOLD
    row_id = _text(row.data.get("unique_id")) or f"math500/{split}/{row.index}"
    return Example(row_id, question, gold, _text(row.data.get("solution")) or None,
                   _meta("math500", row.data.get("subject"), row.data.get("level")))


def _arith(row: Row, split: str, cfg: DataConfig) -> Converted:
    d = row.data
    expr = d["expression"]
    return Example(f"arith/{expr.replace(' ', '')}", d["question"], d["answer"], d["solution"],
                   _meta("arith", "arithmetic", d["num_ops"], expression=expr))


def _jsonl(row: Row, split: str, cfg: DataConfig) -> Converted:
    """Any file: a gold answer holding '####' or '\\boxed{}' is reduced to its final answer
    (the text before it is kept as the worked solution); anything else is the gold as is."""
    question = _text(require(row, cfg.question_field))
    answer = _text(require(row, cfg.answer_field))
    if not question:
        return EMPTY_QUESTION
    gold, solution = answer, None
    if "####" in answer:
        gold, solution = hash_answer(answer), answer.rsplit("####", 1)[0].strip() or None
    elif "\\boxed" in answer or "\\fbox" in answer:
        gold, solution = final_boxed(answer), answer
    if not gold:
        return NO_GOLD
    row_id = _text(row.data.get("id")) or f"jsonl/{split}/{row.index}"
    return Example(row_id, question, gold, solution,
                   _meta("jsonl", row.data.get("subject", row.data.get("type")),
                         row.data.get("level")))


@dataclass(frozen=True)
class Adapter:
    """A dataset family: its row converter and its hub default (None = no hub default)."""

    name: str
    convert: Callable[[Row, str, DataConfig], Converted]
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None


ADAPTERS: dict[str, Adapter] = {
    "gsm8k": Adapter("gsm8k", _gsm8k, "openai/gsm8k", "main"),
    "math": Adapter("math", _math, "DigitalLearningGmbH/MATH-lighteval", "default"),
    "math500": Adapter("math500", _math500, "HuggingFaceH4/MATH-500"),
    "arith": Adapter("arith", _arith),
    "jsonl": Adapter("jsonl", _jsonl),
}
# Code tasks (humaneval, mbpp, pyfunc) add themselves: data/code_tasks.py, imported with the
# package (grpo_cli/data/__init__.py -> build.py).
