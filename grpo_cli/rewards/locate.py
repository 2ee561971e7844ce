"""Where free text states its final answer, found as math-verify's `parse` ranks candidates.

math-verify's LaTeX and expression extraction configs compile regexes with priorities; the
lowest priority that matches anything wins, and among its matches the rightmost:

    0, 50     "final answer is X"; a `\\boxed{}` (boxes side by side, joined by and / or / a
              comma, are one answer set: `\\boxed{-2} and \\boxed{1}` is `-2,1`)
    100, 200  "answer: X", "answer ... X" (so "The answer is 18. That took 3 steps." is 18)
    300       the last LaTeX environment (`$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]`, a bare
              `\\frac{a}{b}`), or the last number or digit expression that starts a word
              (`AZYUK2A` holds none; in `\\frac{1+\\sqrt5}{2}` the 2 is not one); unlike
              math-verify, never one on the left side of an `=` (see _LEFT_SIDE)

Numbers are read with their separators (`1,234` and `1 234` are 1234, `1000,99` is 1000.99,
`12,34` is 12.34, not 12). `locate` returns the winning match as text, normalised by
math-verify's own LaTeX normalisation, not as a sympy value: sympy can hang, so parsing waits
for the equivalence check, which runs in a worker process under a time limit
(equivalence.py). Unlike `parse`, a match that would not parse is not skipped for the next one.
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache
from typing import Any, List, Optional, Tuple

# A priority group is worth scanning only when the text holds one of its anchor words (a speed
# shortcut: every pattern of that group needs one). Priority 300 has no anchor.
_ANCHORS = {0: ("final answer",), 50: ("final answer", "\\boxed", "\\fbox"),
            100: ("answer",), 200: ("answer",)}
# The unanchored group (300) reads only the last lines: its digit-expression regex is quadratic
# on a looping completion (`1 1 1 ...`), and its rightmost match is near the end anyway.
TAIL_CHARS = 2000
# What follows a candidate that is only (part of) the left side of an equation: more numbers
# and operators, then `=`. In "so 9 - 1 =" (a truncated line) neither `9`, `1` nor `9 - 1` is
# the answer; math-verify's parse would take `9 - 1`, which equals the gold 8 when the
# question was "9 - 1", so a restated question would grade as solved.
_LEFT_SIDE = re.compile(r"[\s\d+\-*/×÷^().,]*=")
BOXED_OR_FINAL = 50  # highest priority of a box or a "final answer is" statement
STATED = 200  # highest priority of an answer stated in words


@lru_cache(maxsize=1)
def _ranked() -> List[Tuple[int, List[Tuple[Any, str]]]]:
    """[(priority, [(compiled regex, 'latex' | 'expr')])], lowest priority first."""
    from math_verify.parser import (
        ExprExtractionConfig,
        LatexExtractionConfig,
        get_extraction_regexes,
    )

    groups: dict = {}
    for patterns, target in get_extraction_regexes([LatexExtractionConfig(),
                                                    ExprExtractionConfig()]):
        kind = "latex" if isinstance(target, LatexExtractionConfig) else "expr"
        for pattern, priority in patterns:
            groups.setdefault(priority, []).append((pattern, kind))
    return sorted(groups.items(), key=lambda item: item[0])


@lru_cache(maxsize=1)
def _normalization() -> Any:
    from math_verify.parser import LatexExtractionConfig

    return LatexExtractionConfig().normalization_config


@lru_cache(maxsize=1)
def _number_pattern() -> Any:
    """math-verify's anchored plain-number regex (the last pattern of its expression config)."""
    from math_verify.parser import ExprExtractionConfig, lazy_expr_regex

    pattern, priority = lazy_expr_regex(ExprExtractionConfig())[-1]
    assert priority == 300 and "integer1" in pattern.pattern, "math-verify changed its regexes"
    return pattern


def _latex_text(match: re.Match) -> str:
    """The LaTeX of a match, normalised; several environments of one match joined by commas."""
    from latex2sympy2_extended.math_normalization import normalize_latex

    parts = []
    for name, value in match.groupdict().items():
        if not value or "_latex" not in name:
            continue
        prefix, group = name.split("_", 1)
        config = _normalization()
        if group == "latexBoxed":
            config = replace(config, boxed="last")
        text = normalize_latex(value, config=config).strip()
        if match.groupdict().get(f"{prefix}_percent"):
            text += "\\%"
        if text:
            parts.append(text)
    return ",".join(parts)


def _expr_text(match: re.Match) -> str:
    """A number as math-verify's `extract_expr` reads it (separators resolved, without building
    its slow sympy Number), or a digit expression as written."""
    groups = match.groupdict()
    integer = next((v for k, v in groups.items() if k.startswith("integer") and v), "")
    decimal = next((v for k, v in groups.items() if k.startswith("decimal") and v), "")
    if not (integer or decimal):
        return (groups.get("expr") or "").strip()
    integer = integer.translate(str.maketrans("", "", ", ")).lstrip("0") or "0"
    number = integer + decimal.replace(",", ".")
    return number + ("%" if groups.get("percent") else "")


def _tail(text: str) -> str:
    """The last TAIL_CHARS characters of `text`, from a line start (a `$...$` is not cut)."""
    if len(text) <= TAIL_CHARS:
        return text
    cut = len(text) - TAIL_CHARS
    newline = text.find("\n", cut)
    return text[newline + 1:] if newline >= 0 else text[cut:]


def locate(text: str, max_priority: int = 300) -> Optional[str]:
    """The final answer of `text` as math-verify ranks candidates (module docstring), or None.

    `max_priority` stops the search early: `BOXED_OR_FINAL` looks only for a box or a
    "final answer is" statement, `STATED` also for "answer: X".
    """
    lowered = None
    for priority, patterns in _ranked():
        if priority > max_priority:
            break
        anchors = _ANCHORS.get(priority)
        if anchors is None:
            text = _tail(text)
        else:
            lowered = lowered if lowered is not None else text.lower()
            if not any(a in lowered for a in anchors):
                continue
        matches = [(m, kind) for pattern, kind in patterns for m in pattern.finditer(text)]
        matches.sort(key=lambda mk: (mk[0].end(), -mk[0].start()), reverse=True)
        for match, kind in matches:
            if anchors is None and _LEFT_SIDE.match(text, match.end()):
                continue  # part of an equation's left side (`9 - 1 = ...`): not its answer
            answer = _latex_text(match) if kind == "latex" else _expr_text(match)
            if answer:
                return answer
    return None


def leading_number(text: str) -> Optional[str]:
    """The number `text` starts with (after spaces, a `$`), separators read; None if none."""
    match = _number_pattern().match(" " + text.lstrip())
    return _expr_text(match) if match else None


def last_number(text: str) -> Optional[str]:
    """The last number of `text` that starts a word, separators read; None if there is none."""
    matches = list(_number_pattern().finditer(text))
    return _expr_text(matches[-1]) if matches else None
