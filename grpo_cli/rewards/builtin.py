"""Built-in rewards: plain callables, `fn(prompts, completions, answers, **metadata)`.

Each returns one `float | None` per completion (None = not applicable to that sample). The
metadata always holds `completion_ids_len`, `truncated`, `max_new_tokens`, `answer_format`
(the prompt template: r1 | hash | boxed) and the dataset's lists (level, subject, source...);
each reward names what it uses and ignores the rest through `**_`. The component's configured
`kwargs` arrive as keyword arguments too. `REGISTRY` maps the config names to the functions,
`VALIDATORS` checks a component's kwargs once, when the stack is built.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict, List, Optional, Sequence

from grpo_cli.errors import UserError
from grpo_cli.rewards.code import check_kwargs as check_code_kwargs
from grpo_cli.rewards.code import code_tests
from grpo_cli.rewards.code_spec import last_fenced_block
from grpo_cli.rewards.equivalence import answers_match_many
from grpo_cli.rewards.extract import (
    DEFAULT_ORDER,
    check_order,
    extract_answer,
    hash_answer,
    last_boxed,
    last_boxed_span,
)

Rewards = List[Optional[float]]


# ----------------------------------------------------------------------------- correctness
def _order_for(order: Optional[Sequence[str]], answer_format: str) -> List[str]:
    if order is not None:
        return list(order)
    if answer_format not in DEFAULT_ORDER:
        raise UserError(f"answer_format '{answer_format}' is not one of {sorted(DEFAULT_ORDER)}")
    return DEFAULT_ORDER[answer_format]


def _is_correct(completions: Sequence[str], answers: Sequence[str], mode: str,
                order: Optional[Sequence[str]], answer_format: str,
                symbolic_timeout_s: float) -> List[Optional[bool]]:
    """Per completion: does its extracted answer match the gold one (None: no gold answer)."""
    methods = _order_for(order, answer_format)
    check_order(methods, mode)
    has_gold = [bool(a and str(a).strip()) for a in answers]
    preds = [extract_answer(c, methods, mode) for c in completions]
    matches = answers_match_many(preds, [str(a or "") for a in answers], symbolic_timeout_s)
    return [m if g else None for m, g in zip(matches, has_gold)]


def correctness(prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str], *,
                mode: str = "flexible", order: Optional[Sequence[str]] = None,
                symbolic_timeout_s: float = 3.0, answer_format: str = "hash", **_: Any) -> Rewards:
    """1.0 when the extracted final answer equals the gold answer, else 0.0 (None: no gold).

    mode: strict (only the template's explicit format) | flexible (as a careful grader reads
    it: a stated answer, every box of a multi-answer reply, the last LaTeX expression; see
    extract.py); order: extraction methods (default: the template's own format first).
    """
    correct = _is_correct(completions, answers, mode, order, answer_format, symbolic_timeout_s)
    return [None if c is None else float(c) for c in correct]


def cosine_correctness(prompts: Sequence[str], completions: Sequence[str],
                       answers: Sequence[str], *, completion_ids_len: Sequence[int],
                       max_new_tokens: int, max_len: Optional[int] = None,
                       min_value_correct: float = 0.5, max_value_correct: float = 1.0,
                       min_value_wrong: float = -1.0, max_value_wrong: float = -0.5,
                       mode: str = "flexible", order: Optional[Sequence[str]] = None,
                       symbolic_timeout_s: float = 3.0, answer_format: str = "hash",
                       **_: Any) -> Rewards:
    """Correctness scaled by length on a half cosine ("Demystifying Long Chain-of-Thought").

    With t = min(len / max_len, 1) and c = cos(pi * t): a correct answer earns
    min_correct + (max_correct - min_correct) * (1 + c) / 2 (short -> max_value_correct), a wrong
    one max_wrong + (min_wrong - max_wrong) * (1 + c) / 2 (short -> min_value_wrong: a short
    wrong answer is punished most, a long one less, which encourages thinking longer when wrong).
    """
    limit = max_len or max_new_tokens
    correct = _is_correct(completions, answers, mode, order, answer_format, symbolic_timeout_s)
    rewards: Rewards = []
    for ok, length in zip(correct, completion_ids_len):
        if ok is None:
            rewards.append(None)
            continue
        start, end = ((max_value_correct, min_value_correct) if ok
                      else (min_value_wrong, max_value_wrong))  # value at len 0, at max_len
        half_cos = (1.0 + math.cos(math.pi * min(length / limit, 1.0))) / 2.0  # 1 -> 0
        rewards.append(end + (start - end) * half_cos)
    return rewards


# ---------------------------------------------------------------------------------- format
_FREE = r"(?:(?!</?think>|</?answer>).)*?"  # text holding no tag
_R1_STRICT = re.compile(rf"^<think>\n{_FREE}\n</think>\n<answer>\n{_FREE}\n</answer>\n?$",
                        re.DOTALL)
_R1_SOFT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_HASH_FINAL = re.compile(r"####\s*\$?-?[\d,]*\.?\d+\s*$")
_BOXED_TAIL = re.compile(r"^[\s.$\\\])]*$")  # what may follow the final \boxed{...}


def _with_prefill(prompt: str, completion: str) -> str:
    """Completion with the `<think>` that an R1 prompt may already have opened prepended."""
    start = prompt.rfind("<think>")
    if start >= 0 and not prompt[start + len("<think>"):].strip():
        return prompt[start:] + completion
    return completion


def _boxed_strict(text: str) -> bool:
    """A final `\\boxed{...}` with nothing but punctuation after it."""
    span = last_boxed_span(text)
    return span is not None and bool(_BOXED_TAIL.match(text[span[1]:]))


# (answer_format, variant) -> does the text have the template's answer structure?
FORMAT_CHECKS: Dict[tuple, Callable[[str], bool]] = {
    ("r1", "strict"): lambda t: bool(_R1_STRICT.match(t)),
    ("r1", "soft"): lambda t: bool(_R1_SOFT.search(t)),
    ("hash", "strict"): lambda t: bool(_HASH_FINAL.search(t)),
    ("hash", "soft"): lambda t: hash_answer(t) is not None,
    ("boxed", "strict"): _boxed_strict,
    ("boxed", "soft"): lambda t: last_boxed(t) is not None,
    # code templates: a fenced block to run; a completion-style answer is code as it is
    ("fenced", "strict"): lambda t: last_fenced_block(t) is not None,
    ("fenced", "soft"): lambda t: last_fenced_block(t) is not None,
    ("complete", "strict"): lambda t: True,
    ("complete", "soft"): lambda t: True,
}
FORMAT_VARIANTS = ("strict", "soft")


def format_reward(prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str], *,
                  variant: str = "strict", answer_format: str = "hash", **_: Any) -> Rewards:
    """1.0 when the completion follows the template's answer format, else 0.0.

    r1 strict: exactly `<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>`; r1 soft: both tag
    pairs in order anywhere. hash: a `#### N` (strict: as the last line). boxed: a `\\boxed{}`
    (strict: at the end). A `<think>` opened by the prompt counts as written.
    """
    check = FORMAT_CHECKS.get((answer_format, variant))
    if check is None:
        raise UserError(f"format reward: no check for answer_format '{answer_format}' and "
                        f"variant '{variant}'; variants: {list(FORMAT_VARIANTS)}")
    return [float(check(_with_prefill(p, c))) for p, c in zip(prompts, completions)]


_TAGS = ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>")


def tag_count(prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str], *,
              trailing_penalty: float = 0.001, answer_format: str = "r1", **_: Any) -> Rewards:
    """0.25 for each R1 tag (with its newlines) used exactly once: a dense signal for the format.

    Text after the final `</answer>` costs `trailing_penalty` per character. Not applicable
    (None) when the template is not r1.
    """
    if answer_format != "r1":
        return [None] * len(completions)
    rewards: Rewards = []
    for prompt, completion in zip(prompts, completions):
        text = _with_prefill(prompt, completion)
        score = sum(0.25 for tag in _TAGS if text.count(tag) == 1)
        if text.count("\n</answer>") == 1:
            trailing = text.split("\n</answer>", 1)[1].strip()
            score -= trailing_penalty * len(trailing)
        rewards.append(score)
    return rewards


# ------------------------------------------------------------------------ length, repetition
def length(prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str], *,
           completion_ids_len: Sequence[int], max_new_tokens: int,
           max_len: Optional[int] = None, cache_len: Optional[int] = None, **_: Any) -> Rewards:
    """DAPO soft overlong penalty on the completion's token count n.

    With L = max_len (default max_new_tokens) and C = cache_len (default L // 5, DAPO's
    4096 of 20480): 0 when n <= L - C, linear from 0 to -1 over (L - C, L], -1 beyond L.
    """
    limit = max_len or max_new_tokens
    cache = limit // 5 if cache_len is None else cache_len
    if not 0 < cache <= limit:
        raise UserError(f"length reward: cache_len={cache} must be in (0, max_len={limit}]")
    free = limit - cache
    return [0.0 if n <= free else -1.0 if n > limit else (free - n) / cache
            for n in completion_ids_len]


def repetition(prompts: Sequence[str], completions: Sequence[str], answers: Sequence[str], *,
               n: int = 3, max_penalty: float = 1.0, **_: Any) -> Rewards:
    """-(share of the completion's word n-grams that repeat an earlier one) * max_penalty.

    0 for a completion with fewer than n words; close to -max_penalty for a looping one.
    """
    rewards: Rewards = []
    for completion in completions:
        words = completion.lower().split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        if not grams:
            rewards.append(0.0)
            continue
        repeated = 1.0 - len(set(grams)) / len(grams)
        rewards.append(-repeated * max_penalty)
    return rewards


# ------------------------------------------------------------------------------ registry
REGISTRY: Dict[str, Callable[..., Rewards]] = {
    "correctness": correctness,
    "cosine_correctness": cosine_correctness,
    "format": format_reward,
    "tag_count": tag_count,
    "length": length,
    "repetition": repetition,
    "code_tests": code_tests,
}


def _check_correctness(kw: Dict[str, Any]) -> None:
    check_order(_order_for(kw.get("order"), "hash"), kw.get("mode", "flexible"))
    if not isinstance(kw.get("symbolic_timeout_s", 1.0), (int, float)) or \
            kw.get("symbolic_timeout_s", 1.0) <= 0:
        raise UserError("correctness reward: symbolic_timeout_s must be > 0")


def _check_format(kw: Dict[str, Any]) -> None:
    if kw.get("variant", "strict") not in FORMAT_VARIANTS:
        raise UserError(f"format reward: variant '{kw['variant']}' is not one of "
                        f"{list(FORMAT_VARIANTS)}")


def _check_length(kw: Dict[str, Any]) -> None:
    max_len, cache_len = kw.get("max_len"), kw.get("cache_len")
    if max_len is not None and max_len <= 0:
        raise UserError(f"length reward: max_len={max_len} must be > 0")
    if cache_len is not None and (cache_len <= 0 or (max_len and cache_len > max_len)):
        raise UserError(f"length reward: cache_len={cache_len} must be in (0, max_len]")


def _check_repetition(kw: Dict[str, Any]) -> None:
    if int(kw.get("n", 3)) < 1:
        raise UserError(f"repetition reward: n={kw['n']} must be >= 1")


# name -> check of a component's kwargs (raises UserError), run when the stack is built.
VALIDATORS: Dict[str, Callable[[Dict[str, Any]], None]] = {
    "correctness": _check_correctness,
    "cosine_correctness": _check_correctness,
    "format": _check_format,
    "length": _check_length,
    "repetition": _check_repetition,
    "code_tests": check_code_kwargs,
}
