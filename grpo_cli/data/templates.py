"""Prompt templates: the system prompt, how a worked answer is written, and chat rendering.

A template fixes the *answer format* the rewards later parse:

- ``r1``: reasoning inside ``<think>...</think>``, the final answer in ``<answer>...</answer>``
  (the DeepSeek-R1-Zero prompt).
- ``hash``: reasoning step by step, then a last line ``#### <answer>`` (GSM8K style).
- ``boxed``: reasoning, with the final answer in ``\\boxed{}`` (MATH style).

Variants are data: :data:`TEMPLATES` maps a name to its system prompt and to the function
that writes a few-shot solution in that format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from grpo_cli.data.record import Example

Messages = list[dict[str, str]]

R1_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The Assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>."
)
HASH_SYSTEM = (
    "Solve the problem. Reason step by step, then write the final answer alone on the last "
    "line in the form '#### <answer>', for example '#### 42'."
)
BOXED_SYSTEM = (
    "Solve the problem. Reason step by step, and put your final answer within \\boxed{}."
)


def _r1_solution(solution: Optional[str], answer: str) -> str:
    return f"<think>\n{solution or ''}\n</think>\n<answer>{answer}</answer>"


def _hash_solution(solution: Optional[str], answer: str) -> str:
    return f"{solution}\n#### {answer}" if solution else f"#### {answer}"


def _boxed_solution(solution: Optional[str], answer: str) -> str:
    # MATH solutions already end with the boxed answer: do not box it twice.
    if solution and ("\\boxed" in solution or "\\fbox" in solution):
        return solution
    boxed = f"The final answer is $\\boxed{{{answer}}}$."
    return f"{solution}\n{boxed}" if solution else boxed


FENCED_SYSTEM = (
    "You are a Python programmer. Solve the task with a Python function. Write the whole "
    "program in one ```python code block."
)
COMPLETE_SYSTEM = (
    "Complete the Python function below. Reply with the complete function in one ```python "
    "code block."
)


def _fenced_solution(solution: Optional[str], answer: str) -> str:
    return f"```python\n{(solution or '').strip()}\n```"


@dataclass(frozen=True)
class Template:
    """A prompt template: its system prompt and how a worked solution is written in it."""

    name: str
    system_prompt: str
    format_solution: Callable[[Optional[str], str], str]


TEMPLATES: dict[str, Template] = {
    "r1": Template("r1", R1_SYSTEM, _r1_solution),
    "hash": Template("hash", HASH_SYSTEM, _hash_solution),
    "boxed": Template("boxed", BOXED_SYSTEM, _boxed_solution),
    # code: the gold `answer` is the problem's tests (rewards/code_spec.py), never shown
    "fenced": Template("fenced", FENCED_SYSTEM, _fenced_solution),
    "complete": Template("complete", COMPLETE_SYSTEM, _fenced_solution),
}
CODE_TEMPLATES = ("fenced", "complete")


def system_prompt_for(template: str, override: Optional[str]) -> str:
    """The system prompt to use: ``override`` when set ('' = no system message)."""
    return TEMPLATES[template].system_prompt if override is None else override


def build_messages(question: str, template: str, system_prompt: Optional[str] = None,
                   shots: Sequence[Example] = ()) -> Messages:
    """Chat messages for one question: [system], (user, assistant) per shot, user.

    ``system_prompt`` overrides the template's own; an empty string leaves the system
    message out (for chat templates that do not accept one).
    """
    chosen = TEMPLATES[template]
    system = system_prompt_for(template, system_prompt)
    messages: Messages = [{"role": "system", "content": system}] if system else []
    for shot in shots:
        messages.append({"role": "user", "content": shot.question})
        messages.append({"role": "assistant",
                         "content": chosen.format_solution(shot.solution, shot.answer)})
    messages.append({"role": "user", "content": question})
    return messages


def render_prompt(tokenizer: Any, messages: Messages) -> str:
    """The prompt text the model sees: the tokenizer's chat template, ready for generation."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
