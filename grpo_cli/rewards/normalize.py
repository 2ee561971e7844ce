"""Answer normalisation: cheap, in-process, used before any symbolic comparison.

`normalize_answer` turns `$18.00`, `\\$1,000 dollars`, `x = 5`, `90^\\circ`, `\\dfrac{3}{4}`,
`5\\text{ cm}` into a canonical string (no spaces, no dollar signs, no `\\text`, no `\\left`);
`to_number` reads that string as a float when it is a plain number or a numeric fraction
(`3/4`, `\\frac{3}{4}`, `\\frac34`, `-\\frac{1}{2}`), else returns None.
"""

from __future__ import annotations

import re
from typing import Optional

# Plain words after a number that are units, not mathematics: `18 eggs`, `5 cm`, `3 dollars`.
_MATH_WORDS = {"pi", "sqrt", "inf", "infty", "infinity", "i", "e"}

_REPLACEMENTS = (  # (old, new), applied in order
    ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", ""),
    ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\:", ""), ("\\ ", ""), ("{,}", ","),
    ("\\$", ""), ("$", ""), ("\\%", ""), ("%", ""), ("^\\circ", ""), ("^{\\circ}", ""),
    ("\\circ", ""), ("\\displaystyle", ""), ("\\cdot", "*"), ("\\times", "*"),
)
_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\{([^{}]*)\}")
_VAR_ASSIGN_RE = re.compile(r"^[a-zA-Z]\s*=\s*(?=\S)")
# A whole answer that is a number with thousands separators (`1,000`, `-12,345.5 dollars`).
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?:\s*[a-zA-Z][a-zA-Z .]*)?$")
_UNIT_TAIL_RE = re.compile(r"^(.*?\d)(\s*)((?:[a-zA-Z]{2,}\.?\s*)+)$")
# Units that may follow a number without a space (`5cm`); other words need one (`2xy` stays).
_GLUED_UNITS = {"cm", "mm", "km", "kg", "mg", "ft", "in", "lb", "lbs", "mph", "sec", "min",
                "hr", "hrs", "oz", "th", "st", "nd", "rd"}
_TRAILING_ZEROS_RE = re.compile(r"^(-?\d+)\.0+$")
_FLOAT = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_FLOAT_RE = re.compile(rf"^{_FLOAT}$")
_SLASH_FRAC_RE = re.compile(rf"^({_FLOAT})/({_FLOAT})$")
_LATEX_FRAC_RE = re.compile(r"^([+-]?)\\frac(?:\{([^{}]+)\}|(\d))(?:\{([^{}]+)\}|(\d))$")


def _strip_unit_words(s: str) -> str:
    """`18 eggs` -> `18`; `5 cm` -> `5`; leaves `2 pi` and anything with LaTeX alone."""
    match = _UNIT_TAIL_RE.match(s)
    if match is None:
        return s
    words = match.group(3).replace(".", " ").split()
    if any(w.lower() in _MATH_WORDS for w in words):
        return s
    if not match.group(2) and words[0].lower() not in _GLUED_UNITS:
        return s
    return match.group(1)


def normalize_answer(answer: str) -> str:
    """Canonical string form of an answer (see the module docstring); '' for an empty one."""
    s = answer.strip()
    for _ in range(3):  # nested \text{\textbf{..}}
        s = _TEXT_RE.sub(r"\1", s)
    for old, new in _REPLACEMENTS:
        s = s.replace(old, new)
    s = s.strip().rstrip(".").strip()
    s = _VAR_ASSIGN_RE.sub("", s)
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    s = _strip_unit_words(s)
    s = re.sub(r"\s+", "", s)
    s = _TRAILING_ZEROS_RE.sub(r"\1", s)
    if s.startswith("+"):
        s = s[1:]
    return s


def _float(s: str) -> Optional[float]:
    """A float when `s` is a plain decimal number, else None."""
    return float(s) if _FLOAT_RE.match(s) else None


def to_number(answer: str) -> Optional[float]:
    """Numeric value of a normalised-or-raw answer (plain number or numeric fraction), or None."""
    s = normalize_answer(answer)
    value = _float(s)
    if value is not None:
        return value
    match = _SLASH_FRAC_RE.match(s)
    if match:
        num, den = float(match.group(1)), float(match.group(2))
        return num / den if den != 0 else None
    match = _LATEX_FRAC_RE.match(s)
    if match:
        sign = match.group(1)
        num_s, den_s = match.group(2) or match.group(3), match.group(4) or match.group(5)
        num, den = _float(num_s), _float(den_s)
        if num is None or den is None or den == 0:
            return None
        return (-num if sign == "-" else num) / den
    return None
