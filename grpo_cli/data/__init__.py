"""Dataset adapters: GSM8K, MATH, MATH-500, synthetic arithmetic and any JSONL file, all
turned into one prompt record (:class:`Record`) with a gold answer.

Entry points: :func:`build_dataset` (train + test, for training) and :func:`load_split`
(one split, for eval); :func:`render_prompt` applies the tokenizer's chat template.
"""

from grpo_cli.data.build import build_dataset, count_prompt_tokens, load_split
from grpo_cli.data.record import DatasetSplits, Example, Record
from grpo_cli.data.templates import TEMPLATES, build_messages, render_prompt

__all__ = [
    "TEMPLATES",
    "DatasetSplits",
    "Example",
    "Record",
    "build_dataset",
    "build_messages",
    "count_prompt_tokens",
    "load_split",
    "render_prompt",
]
