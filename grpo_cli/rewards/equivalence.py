"""Is a predicted answer equivalent to the gold one?

Cheapest test first, all in-process, so a batch of plain numbers grades in microseconds:
1. normalised strings equal (`$1,000` = `1000`, `(1, 2]` = `(1,2]`)            -> match
2. both read as numbers: relative tolerance 1e-6 (`18` != `180`, `0.5` != `5`)  -> decided
3. a number against text with neither digits nor LaTeX (`18` vs `eggs`)         -> no match
4. otherwise a symbolic check with math-verify (`\\sqrt{2}/2` = `\\frac{\\sqrt2}{2}`,
   intervals, tuples), in a worker process under a hard time limit per sample
   (procpool.py says why a process); a time-out or error falls back to step 1 (no match).

math-verify's own signal-based time limit is turned off (`parsing_timeout=None`,
`timeout_seconds=None`): it only works in the main thread, and our limit is the process kill.
Symbolic verdicts are cached (bounded), since the G completions of a group often repeat an answer.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from typing import Dict, List, Optional, Sequence, Tuple

from grpo_cli.rewards.normalize import normalize_answer, to_number
from grpo_cli.rewards.procpool import shared_pool

REL_TOL = 1e-6
ABS_TOL = 1e-9
SYMBOLIC_FN = "grpo_cli.rewards.equivalence:symbolic_match"
_WORKER_PRELOAD = ("math_verify", "grpo_cli.rewards.equivalence")
_CACHE_SIZE = 20_000
_cache: Dict[Tuple[str, str], bool] = {}
_cache_lock = threading.Lock()
_HAS_MATH = re.compile(r"[\d\\]")
_MAX_SET_PARTS = 6  # math-verify joins at most six environments into one answer set
_PLAIN_NUMBER = re.compile(r"\s*-?(?:\d+(?:\.\d*)?|\.\d+)\s*\Z")


def top_level_parts(answer: str) -> List[str]:
    """`(2,2),(6,2)` -> [`(2,2)`, `(6,2)`]: split at the commas outside any bracket."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(answer):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(answer[start:i].strip())
            start = i + 1
    return parts + [answer[start:].strip()]


def _as_latex(answer: str) -> str:
    """An extracted answer as LaTeX math-verify reads whole: `$...$`, and an answer set
    (`13,\\text{(E)}`, `25,(0,9) \\cup (9,36)`) as one `$...$` per element, since inside one
    environment its unit clean-up drops `\\text{}` and one element it cannot parse loses the
    set. A list of plain numbers (`1,-2`) stays one environment (`10,455` is a number there).
    """
    body = answer.strip().strip("$").strip()
    parts = top_level_parts(body)
    if 2 <= len(parts) <= _MAX_SET_PARTS and all(parts) and \
            not all(map(_PLAIN_NUMBER.match, parts)):
        return ", ".join(f"${part}$" for part in parts)
    return f"${body}$"


def symbolic_match(pred: str, gold: str) -> bool:
    """math-verify equivalence of two answers, no time limit of its own (runs in a worker)."""
    from math_verify import parse, verify  # imported in the worker only: ~1.5 s

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout disabled" warning
    gold_parsed = parse(_as_latex(gold), parsing_timeout=None)
    pred_parsed = parse(_as_latex(pred), parsing_timeout=None)
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def cheap_match(pred: Optional[str], gold: str) -> Optional[bool]:
    """Steps 1-3 of the module docstring: True/False when decided, None when symbolic is needed."""
    if pred is None or not pred.strip() or not gold.strip():
        return False
    if _PLAIN_NUMBER.match(pred) and _PLAIN_NUMBER.match(gold):  # `18` vs `180`: the bulk
        return math.isclose(float(pred), float(gold), rel_tol=REL_TOL, abs_tol=ABS_TOL)
    norm_pred, norm_gold = normalize_answer(pred), normalize_answer(gold)
    if norm_pred and norm_pred == norm_gold:
        return True
    num_pred, num_gold = to_number(pred), to_number(gold)
    if num_pred is not None and num_gold is not None:
        return math.isclose(num_pred, num_gold, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if (num_pred is not None and not _HAS_MATH.search(gold)) or (
            num_gold is not None and not _HAS_MATH.search(pred)):
        return False
    return None


def _symbolic_many(pairs: Sequence[Tuple[str, str]], timeout_s: float) -> List[bool]:
    """Symbolic verdicts for unique pairs, through the cache and the worker-process pool."""
    with _cache_lock:
        todo = [p for p in dict.fromkeys(pairs) if p not in _cache]
    if todo:
        outcomes = shared_pool(_WORKER_PRELOAD).map(SYMBOLIC_FN, todo, timeout_s)
        with _cache_lock:
            if len(_cache) + len(todo) > _CACHE_SIZE:
                _cache.clear()
            for pair, outcome in zip(todo, outcomes):
                # a time-out is cached as a mismatch too: the same expression would hang again
                _cache[pair] = outcome.status == "ok" and bool(outcome.value)
    with _cache_lock:
        return [_cache.get(p, False) for p in pairs]


def answers_match_many(preds: Sequence[Optional[str]], golds: Sequence[str],
                       timeout_s: float) -> List[bool]:
    """`answers_match` for a batch: cheap checks in-process, symbolic ones in parallel workers."""
    verdicts = [cheap_match(p, g) for p, g in zip(preds, golds)]
    undecided = [i for i, v in enumerate(verdicts) if v is None]
    if undecided:
        pairs = [(str(preds[i]), golds[i]) for i in undecided]
        for i, verdict in zip(undecided, _symbolic_many(pairs, timeout_s)):
            verdicts[i] = verdict
    return [bool(v) for v in verdicts]


def answers_match(pred: Optional[str], gold: str, timeout_s: float = 3.0) -> bool:
    """True when `pred` is equivalent to `gold` (numbers, then symbolic within `timeout_s`)."""
    return answers_match_many([pred], [gold], timeout_s)[0]
