"""The GRPO math on tensors: advantages, the clipped loss with its KL term and aggregations,
chunked log-probs. No config objects, no I/O."""
