"""What a run is made of: `RunParts`, built once by train.run and never replaced, and
`RunState`, the few numbers that change as the run goes.

The parts are objects with state of their own (the optimizer's moments, the sampler's
position, the KL controller's beta), saved and restored by the Checkpointer; the run state is
what the loop itself decides: the step, the batch sizes an out-of-memory error shrank, the
retry and bad-step counts, and the best eval so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from grpo_cli.config.schema import GrpoConfig
from grpo_cli.trainer.dist import SINGLE, Dist
from grpo_cli.trainer.hooks import NO_HOOKS, Hooks


@dataclass(frozen=True)
class RunParts:
    """Everything a step needs, built once."""
    cfg: GrpoConfig
    policy: Any  # policy.model.Policy: model, tokenizer, device, reference()
    optimizer: torch.optim.Optimizer
    scheduler: Any
    params: list  # the trainable parameters (gradient clipping)
    kl_ctl: Any  # algo.loss.FixedKLController | AdaptiveKLController
    rewards: Any  # rewards.RewardStack
    records: list  # data.Record per training prompt
    prompts: list[str]  # the chat-templated text of each record
    sampler: Any  # trainer.sampler.PromptSampler
    tracker: Any  # tracking.Tracker
    engine: Any  # the rollout engine (rollout.engine): .generate(prompts, sampling, ...)
    hooks: Hooks = NO_HOOKS
    dist: Dist = SINGLE  # the data-parallel ranks (trainer/dist.py); SINGLE: one process
    test_records: list = field(default_factory=list)  # the held-out split (trainer.eval_every)


@dataclass
class RunState:
    """What changes from step to step (RunParts hold the rest)."""
    micro_batch_size: int  # shrunk after an out-of-memory error, for the rest of the run
    rollout_batch_size: Optional[int]  # the same (None = the whole step's batch at once)
    step: int = 0  # the step being run; before the loop, the last one done (resume)
    oom_retries: int = 0
    bad_in_a_row: int = 0  # steps in a row whose update was skipped (non-finite)
    skipped_total: int = 0  # skipped steps of this process (health/skipped_steps)
    last_good: int = 0  # the last step whose updates all applied (0 = the start)
    best: Optional[dict] = field(default=None)  # {"accuracy", "step"} of the best eval

    @classmethod
    def start(cls, cfg: GrpoConfig, step: int = 0, best: Optional[dict] = None) -> RunState:
        """The state at `step` (0 = a fresh run), with the config's batch sizes."""
        return cls(cfg.trainer.micro_batch_size, cfg.rollout.batch_size, step=step,
                   last_good=step, best=best)

    def count_step(self, skipped: bool) -> None:
        """Record whether the step just run skipped an update."""
        self.bad_in_a_row = self.bad_in_a_row + 1 if skipped else 0
        self.last_good = self.last_good if skipped else self.step
        self.skipped_total += int(skipped)
