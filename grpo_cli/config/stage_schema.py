"""`sample` and `sft`: the keys of `grpo sample` (rejection sampling) and `grpo sft`
(supervised fine-tuning), the R1 stages around GRPO.

Their own module so that schema.py stays one screen per group; GrpoConfig reaches them as
`sample` and `sft` (grpo_cli/sample/, grpo_cli/sft/ read them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from grpo_cli.config.fields import bounded, choice


@dataclass
class SampleConfig:
    # grpo sample: completions drawn per problem (sampled with eval.temperature / top_p /
    # top_k, at most eval.max_new_tokens each; 1 = greedy).
    num_samples: int = bounded(8, lo=1)
    # Which split of data is sampled: its train part (data.train_split) or test part.
    split: str = choice("train", ["train", "test"])
    # Problems sampled (null = the whole split).
    limit: Optional[int] = bounded(None, lo=1)
    # Which completions are kept: correct = the correctness reward accepts it (1.0); best =
    # the highest total reward of its problem (ties kept); threshold = total >= sample.threshold.
    keep: str = choice("correct", ["correct", "best", "threshold"])
    # The total reward a completion needs with sample.keep=threshold.
    threshold: Optional[float] = None
    # Most completions kept per problem (the highest totals first).
    max_per_problem: int = bounded(1, lo=1)
    # Keep a completion only once per problem (texts compared with whitespace collapsed).
    dedupe: bool = True
    # The JSONL of kept rows (prompt, completion, question, answer, rewards, source
    # checkpoint); <out>.done.jsonl lists the finished problems (a rerun skips them) and
    # <out>.summary.json the summary. Required by grpo sample.
    out: Optional[str] = None


@dataclass
class SftConfig:
    # grpo sft: rows per optimizer step (split into trainer.micro_batch_size micro-batches,
    # whose gradients are accumulated; the loss is the mean over the step's completion tokens).
    batch_size: int = bounded(8, lo=1)
    # Rows longer than this (all their tokens) are dropped and counted; with
    # sft.packing, the length of a packed sequence.
    max_seq_len: int = bounded(1024, lo=8)
    # Pack the step's rows into sequences of up to sft.max_seq_len tokens (as few as hold
    # them, filled evenly) instead of padding each to its micro-batch's longest row; a
    # micro-batch is then trainer.micro_batch_size sequences. Rows keep their own positions
    # and attend only to themselves (block-diagonal causal mask): each row's loss is unchanged.
    packing: bool = False
    # Passes over the training rows (null = trainer.max_steps steps). When set, the run is
    # ceil(epochs * train rows / sft.batch_size) steps (0.5 = half an epoch) and
    # trainer.max_steps is not read; the optimizer schedule spans those steps.
    epochs: Optional[float] = bounded(None, gt=0)
    # Held-out loss (eval/loss) on the data's test part every N steps and at the end
    # (0 = only at the end).
    eval_every: int = bounded(0, lo=0)
    # Rows the held-out loss reads (null = the whole test part).
    eval_limit: Optional[int] = bounded(200, lo=1)
