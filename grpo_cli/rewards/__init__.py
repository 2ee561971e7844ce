"""Rewards: plain functions and the RewardStack that weighs, isolates and logs them.

Calling convention of a reward function (built-in or the user's, named in the config by its
registered name or as 'package.module:function'):

    fn(prompts: list[str], completions: list[str], answers: list[str], **metadata)
        -> list[float | None]          # one value per completion

- None means "not applicable to this sample": it is left out of that sample's weighted sum
  (and of the component's mean/std).
- `metadata` always holds `completion_ids_len: list[int]`, `truncated: list[bool]`,
  `max_new_tokens: int`, `answer_format: str` ("r1" | "hash" | "boxed": the prompt template,
  given once when the stack is built) and the dataset's per-sample lists (level, subject,
  source, ...), plus the component's configured `kwargs` (which win over metadata of the
  same name). Accept `**kwargs` and ignore what you do not use; a function without
  `**kwargs` is refused when the stack is built.
- Returning the wrong number of values, or a non-number, fails the run at once (UserError).
  Raising, or running past the component's `timeout_s` on a sample, does not: that sample
  gets the component's `fallback` and is counted in `rewards/<name>/errors`.
- Work that can hang in pure Python (sympy) must run in a process with a time limit: the
  built-in correctness reward does its symbolic checks in `procpool.TimedProcessPool` workers.

Example: reward.components.brevity = {fn: my_pkg.rewards:brevity, weight: 0.1}, with

    def brevity(prompts, completions, answers, completion_ids_len, **_):
        return [-n / 1000 for n in completion_ids_len]

`build_reward_stack` and `RewardStack` (stack.py) import torch; they are loaded lazily so that
the symbolic worker processes, which import this package, start without it.
"""

from typing import Any

from grpo_cli.rewards.builtin import REGISTRY
from grpo_cli.rewards.equivalence import answers_match
from grpo_cli.rewards.extract import extract_answer, hash_answer, last_boxed

__all__ = ["REGISTRY", "RewardResult", "RewardStack", "answers_match", "build_reward_stack",
           "extract_answer", "hash_answer", "last_boxed"]

_LAZY = {"build_reward_stack", "RewardStack", "RewardResult"}


def __getattr__(name: str) -> Any:
    """Lazy exports of stack.py (torch)."""
    if name in _LAZY:
        from grpo_cli.rewards import stack

        return getattr(stack, name)
    raise AttributeError(f"module 'grpo_cli.rewards' has no attribute '{name}'")
