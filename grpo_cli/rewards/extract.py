"""Final-answer extraction from a completion.

Four methods, each a function `text -> str | None` in `EXTRACTORS`:
- `answer_tag`:  the content of the last `<answer>...</answer>` (R1 template); when that content
                 holds a `\\boxed{}`, the boxed content.
- `hash`:        the number after the last `####` (GSM8K template), commas removed.
- `boxed`:       the content of the last `\\boxed{...}` / `\\fbox{...}` (nested braces handled).
- `last_number`: the last number in the text (commas of thousands removed).

`extract_answer(text, order, mode)`:
- strict:   only the template's explicit format: the first method of `order` that is an explicit
            one (answer_tag, hash or boxed). A completion without that format gets None.
- flexible: every method of `order` in turn, the first that finds something wins, with the last
            number as the final fallback.

Reported accuracy depends heavily on this choice: evaluation reports both modes.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from grpo_cli.errors import UserError

# A number: thousands with commas (1,000,000) or plain digits, optional decimals; or .5
_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_HASH_RE = re.compile(r"####\s*\$?\s*(" + _NUMBER + r")")
_HASH_LINE_RE = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def _strip_commas(number: str) -> str:
    """`1,234.5` -> `1234.5`."""
    return number.replace(",", "")


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


def hash_answer(text: str) -> Optional[str]:
    """The number after the last `####` (GSM8K gold format), commas removed; None if absent."""
    matches = _HASH_RE.findall(text)
    return _strip_commas(matches[-1]) if matches else None


def _extract_hash(text: str) -> Optional[str]:
    """`#### N`: the number, else whatever non-empty rest of the line follows the last `####`."""
    number = hash_answer(text)
    if number is not None:
        return number
    lines = [s.strip() for s in _HASH_LINE_RE.findall(text)]
    return lines[-1] if lines and lines[-1] else None


def _extract_answer_tag(text: str) -> Optional[str]:
    """Content of the last `<answer>...</answer>` (its `\\boxed{}` content when it has one)."""
    matches = _ANSWER_TAG_RE.findall(text)
    if not matches:
        return None
    content = matches[-1].strip()
    boxed = last_boxed(content)
    if boxed is not None:
        return boxed
    return content or None


def last_number(text: str) -> Optional[str]:
    """The last number in `text`, commas of thousands removed; None if there is none."""
    matches = _NUMBER_RE.findall(text)
    return _strip_commas(matches[-1]) if matches else None


EXTRACTORS: Dict[str, Callable[[str], Optional[str]]] = {
    "answer_tag": _extract_answer_tag,
    "hash": _extract_hash,
    "boxed": last_boxed,
    "last_number": last_number,
}
# Methods that are a template's explicit answer format (what strict mode accepts).
EXPLICIT_METHODS = ("answer_tag", "hash", "boxed")
MODES = ("strict", "flexible")

# Default extraction order for each prompt template (data.template): its own format first.
DEFAULT_ORDER: Dict[str, List[str]] = {
    "r1": ["answer_tag", "boxed", "hash", "last_number"],
    "hash": ["hash", "boxed", "answer_tag", "last_number"],
    "boxed": ["boxed", "answer_tag", "hash", "last_number"],
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
    for method in list(order) + ["last_number"]:
        answer = EXTRACTORS[method](text)
        if answer is not None:
            return answer
    return None
