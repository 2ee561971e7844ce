"""Dataset adapters: GSM8K, MATH, MATH-500, synthetic arithmetic and any JSONL file, all
turned into one prompt record (:class:`Record`) with a gold answer.

Entry points: :func:`build_dataset` (train + test, for training; the trainer calls its two
halves, :func:`read_examples` and :func:`build_prompts`, apart) and :func:`load_split`
(one split, for eval); :func:`render_prompt` applies the tokenizer's chat template.
"""

from grpo_cli.data.build import (
    DatasetExamples,
    build_dataset,
    build_prompts,
    count_prompt_tokens,
    load_split,
    read_examples,
)
from grpo_cli.data.record import DatasetSplits, Example, Record
from grpo_cli.data.templates import TEMPLATES, build_messages, render_prompt

__all__ = [
    "TEMPLATES",
    "DatasetExamples",
    "DatasetSplits",
    "Example",
    "Record",
    "build_dataset",
    "build_messages",
    "build_prompts",
    "count_prompt_tokens",
    "load_split",
    "read_examples",
    "render_prompt",
]
