"""The training loop (`train`: build -> loop -> finish), one GRPO step as a typed pipeline
(`step`: collect -> ScoredBatch, update -> StepStats), the logged metric names (`metrics`),
the run's parts and state (`parts`), the config as sampling / loss settings (`settings`),
checkpoints (`checkpoint`), out-of-memory retries (`memory`), the hooks a caller may pass
(`hooks`), prompt sampling, the optimizer, the run folder, CPU threads and the run's
reporting."""
