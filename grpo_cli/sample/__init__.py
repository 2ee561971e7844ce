"""`grpo sample`: rejection sampling from a checkpoint or a teacher model (run.py), the keep
rules and summary (keep.py), and the resumable output files (store.py)."""

from grpo_cli.sample.run import run_sample

__all__ = ["run_sample"]
