"""The training loop (`train`), one GRPO step (`step`), prompt sampling, the optimizer,
checkpoints, the run folder, CPU threads and the run's reporting."""
