"""The common prompt record every dataset adapter produces, and the result of a build.

Adapters first turn a raw row into an :class:`Example` (question, gold answer, a worked
solution for few-shot prompts, metadata); the builder then wraps each example in chat
messages (system prompt, few-shot pairs, question) and hands out :class:`Record` values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Example:
    """One problem as the adapter reads it, before any prompt template is applied.

    ``solution`` is the worked reasoning without the final-answer line (``None`` when the
    source has none); few-shot prompts append the answer in the template's own format.
    """

    id: str
    question: str
    answer: str
    solution: Optional[str]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Record:
    """One training / eval prompt.

    ``prompt`` holds chat messages (``{"role": ..., "content": ...}``): an optional system
    message, few-shot user/assistant pairs, then the question as the last user message.
    ``answer`` is the gold final answer as a string. ``metadata`` has the same keys for every
    row of a dataset (``source``, ``subject``, ``level``, plus adapter-specific ones).
    """

    id: str
    prompt: list[dict[str, str]]
    answer: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        """The text of the last user message (the problem itself)."""
        return self.prompt[-1]["content"]


@dataclass
class DatasetSplits:
    """What :func:`grpo_cli.data.build_dataset` returns.

    ``dropped`` maps a reason (``no_gold_answer``, ``prompt_too_long``, ...) to the number of
    rows removed for it, summed over both splits. ``answer_format`` is the prompt template
    name (``r1``, ``hash`` or ``boxed``): the rewards read the final answer in that format.
    """

    train: list[Record]
    test: list[Record]
    dropped: dict[str, int]
    answer_format: str
