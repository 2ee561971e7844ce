"""grpo: config-driven GRPO fine-tuning of causal language models on one GPU."""

__version__ = "0.1.0"
