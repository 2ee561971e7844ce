"""Final-answer extraction from a completion (and from a gold solution).

The methods, each `text -> str | None`; strict mode uses `EXTRACTORS`, flexible `FLEXIBLE`:
- `answer_tag`:  the content of the last `<answer>...</answer>` (R1 template): its final
                 `\\boxed{}` when it holds one, else the content. Flexible reads a content
                 written as prose ("So she has 18 eggs.") as free text (`last_expression`).
- `hash`:        the number after the last `####` (GSM8K template), read whole: `1,234` is
                 1234, `12,34` is 12.34 (never the prefix 12).
- `boxed`:       the final `\\boxed{...}` / `\\fbox{...}`, where boxes side by side (joined by
                 and / or / a comma) are one answer set: `\\boxed{-2} and \\boxed{1}` is `-2,1`.
                 Flexible also takes a "The final answer is X" written after the box.
- `last_number`: the last number that starts a word (`AZYUK2A` has none), separators read.
- `last_expression`: free text as math-verify ranks it (locate.py): a stated answer ("the
                 answer is X", "answer: X"), else the last LaTeX expression (`$\\frac13$`,
                 `$(1,4.5)$`, `$x \\in [-2,7]$` whole, not their last digits), else the last
                 number.

`extract_answer(text, order, mode)`:
- strict:   only the template's explicit format: the first method of `order` that is an explicit
            one (answer_tag, hash or boxed). A completion without that format gets None.
- flexible: every method of `order` in turn, the first that finds something wins, with
            `last_expression` as the final fallback.

Reported accuracy depends heavily on this choice: evaluation reports both modes.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from grpo_cli.errors import UserError
from grpo_cli.rewards.locate import BOXED_OR_FINAL, STATED, last_number, leading_number, locate

_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_HASH_LINE_RE = re.compile(r"####[ \t]*([^\n]*)")
_BOX_COMMANDS = ("\\boxed", "\\fbox")
# What may stand between two boxes of one answer set: `$ and $x = `, `, `, `\\text{ or }`.
_BOX_JOINER_RE = re.compile(r"[\s$.,;]*(?:(?:\\text\{\s*)?\b(?:and|or)\b(?:\s*\})?)?[\s$,;]*"
                            r"(?:[A-Za-z](?:_\{?\w+\}?)?\s*=\s*)?\Z")
# Two words in a row (not LaTeX commands): an `<answer>` content written as a sentence.
_PROSE_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}\s+[A-Za-z]{2,}")


def last_boxed_span(text: str) -> Optional[Tuple[str, int]]:
    """(content, end index) of the last `\\boxed{...}` / `\\fbox{...}`; None if absent/unbalanced.

    The end index is just past the closing brace (or past the token of `\\boxed 5`).
    """
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    i = start + len(cmd)
    if text.startswith(" ", i):  # `\boxed 5`: up to the next space or `$`
        match = re.compile(r"\s*([^\s$]+)").match(text, i)
        return (match.group(1), match.end()) if match else None
    if not text.startswith("{", i):
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip(), j + 1
    return None


def last_boxed(text: str) -> Optional[str]:
    """Content of the last `\\boxed{...}` or `\\fbox{...}` in `text` (None if absent/unbalanced).

    Braces are matched, so `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`. The brace-less form
    `\\boxed 5` (seen in MATH solutions) gives the token after the space.
    """
    span = last_boxed_span(text)
    return span[0] if span else None


def final_boxed(text: str) -> Optional[str]:
    """The final box, or the final boxes side by side as one answer set (`-2,1`).

    Boxes are side by side when only `$`, spaces, punctuation, `and` / `or` and a `x =` stand
    between them (`$x = \\boxed{-2}$ and $x = \\boxed{1}$`). A box further back (a second
    solution, an intermediate result) is not part of the answer. None without a balanced box.
    """
    span = last_boxed_span(text)
    if span is None:
        return None
    answers = [span[0]]
    head = text[:max(text.rfind(cmd) for cmd in _BOX_COMMANDS)]  # before the last box
    while True:
        box = last_boxed_span(head)
        if box is None or not _BOX_JOINER_RE.match(head[box[1]:]):
            break
        if box[0] not in answers:
            answers.insert(0, box[0])
        head = head[:max(head.rfind(cmd) for cmd in _BOX_COMMANDS)]
    return ",".join(answers)


def hash_answer(text: str) -> Optional[str]:
    """The number after the last `####` that has one (GSM8K gold format), read whole."""
    for piece in reversed(text.split("####")[1:]):
        number = leading_number(piece)
        if number is not None:
            return number
    return None


def _extract_hash(text: str) -> Optional[str]:
    """`#### N`: the number, else whatever non-empty rest of the line follows the last `####`."""
    number = hash_answer(text)
    if number is not None:
        return number
    lines = [s.strip() for s in _HASH_LINE_RE.findall(text)]
    return lines[-1] if lines and lines[-1] else None


def _tag_content(text: str) -> Optional[str]:
    matches = _ANSWER_TAG_RE.findall(text)
    return matches[-1].strip() if matches else None


def _extract_answer_tag(text: str) -> Optional[str]:
    """Content of the last `<answer>...</answer>` (its `\\boxed{}` content when it has one)."""
    content = _tag_content(text)
    if content is None:
        return None
    boxed = final_boxed(content)
    if boxed is not None:
        return boxed
    return content or None


def _flexible_answer_tag(text: str) -> Optional[str]:
    """The tag's box or stated answer; a bare content as it is; a sentence read as free text."""
    content = _tag_content(text)
    if not content:
        return None
    stated = locate(content, STATED)
    if stated is not None:
        return stated
    if _PROSE_RE.search(content):
        return locate(content) or content
    return content


def _flexible_boxed(text: str) -> Optional[str]:
    """The final box (set), unless a "final answer is X" is written after it."""
    span = last_boxed_span(text)
    if span is None:
        return locate(text, BOXED_OR_FINAL)
    return locate(text[span[1]:], BOXED_OR_FINAL) or final_boxed(text)


EXTRACTORS: Dict[str, Callable[[str], Optional[str]]] = {
    "answer_tag": _extract_answer_tag,
    "hash": _extract_hash,
    "boxed": final_boxed,
    "last_number": last_number,
    "last_expression": locate,
}
# Flexible mode reads the same formats as a careful grader would (module docstring).
FLEXIBLE: Dict[str, Callable[[str], Optional[str]]] = {
    **EXTRACTORS, "answer_tag": _flexible_answer_tag, "boxed": _flexible_boxed}
# Methods that are a template's explicit answer format (what strict mode accepts).
EXPLICIT_METHODS = ("answer_tag", "hash", "boxed")
MODES = ("strict", "flexible")

# Default extraction order for each prompt template (data.template): its own format first.
DEFAULT_ORDER: Dict[str, List[str]] = {
    "r1": ["answer_tag", "boxed", "hash", "last_expression"],
    "hash": ["hash", "boxed", "answer_tag", "last_expression"],
    "boxed": ["boxed", "answer_tag", "hash", "last_expression"],
}


def check_order(order: Sequence[str], mode: str) -> None:
    """Raise UserError for an unknown method or mode, or a strict order without explicit method."""
    unknown = [m for m in order if m not in EXTRACTORS]
    if unknown:
        raise UserError(f"answer extraction order has unknown method(s) {unknown}; "
                        f"allowed: {sorted(EXTRACTORS)}")
    if mode not in MODES:
        raise UserError(f"answer extraction mode '{mode}' is not one of {list(MODES)}")
    if mode == "strict" and not any(m in EXPLICIT_METHODS for m in order):
        raise UserError(f"strict answer extraction needs one of {list(EXPLICIT_METHODS)} "
                        f"in the order, got {list(order)}")


def extract_answer(text: str, order: Sequence[str], mode: str = "flexible") -> Optional[str]:
    """The final answer of a completion, or None when none is found (see module docstring)."""
    check_order(order, mode)
    if mode == "strict":
        method = next(m for m in order if m in EXPLICIT_METHODS)
        return EXTRACTORS[method](text)
    for method in list(order) + ["last_expression"]:
        answer = FLEXIBLE[method](text)
        if answer is not None:
            return answer
    return None
