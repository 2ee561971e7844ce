"""`grpo sft`: supervised fine-tuning on prompt + completion or chat `messages` rows: the rows
and the loss mask (data.py, chat.py), packing (pack.py), the loop on grpo train's model,
optimizer, checkpoint and tracker parts (run.py)."""

from grpo_cli.sft.run import run_sft

__all__ = ["run_sft"]
